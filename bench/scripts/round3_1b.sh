# Round 3, call 1 (one H100): GPU tests of the fusions, then Llama-3.2-1B SFT at the recipe's global batch (8 packs of
# 4096 per step), one system per process: 8 x [1 pack] and 4 x [2 packs] micro-batches, ours and HF.
source bench/scripts/gpu_env.sh
timeout 150 python3 -m pytest -q -m gpu tests/unit/models/test_fused_gpu.py 2>&1 | tail -3
B="timeout 120 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_1b_sft_k2_ours.json 2>&1 | grep '^{'
$B --micro-batches 4 --packs-per-micro-batch 2 --systems hf --out $OUT/h100_1b_sft_k2_hf.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems ours --out $OUT/h100_1b_sft_k1_ours.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems hf --out $OUT/h100_1b_sft_k1_hf.json 2>&1 | grep '^{'
# ran as the variant ours:rope_compile (+4.5 %), since the default (rope.apply_rotary_fused) and the variant removed:
# $B --micro-batches 4 --packs-per-micro-batch 2 --systems ours:rope_compile --out $OUT/h100_1b_sft_k2_rope.json
