# Round 3, call 3 (one H100): GPU tests (fusions vs cuda_fast_kernels=False, HF parity), compiled RMSNorm A/B (the
# torch.compile-d RMSNorm measured 57,464 vs 57,360 tok/s eager: no gain, removed with its ours:eager_norm variant),
# 4 packs per micro-batch (packed_sequence_size 16384) for both systems, and whether torch offers FA3 here.
source bench/scripts/gpu_env.sh
timeout 240 python3 -m pytest -q -m gpu tests/unit/models 2>&1 | tail -3
B="timeout 120 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_1b_sft_k2_ours_r3.json 2>&1 | grep '^{'
$B --micro-batches 2 --packs-per-micro-batch 4 --systems ours --out $OUT/h100_1b_sft_k4_ours.json 2>&1 | grep '^{'
$B --micro-batches 2 --packs-per-micro-batch 4 --systems hf --out $OUT/h100_1b_sft_k4_hf.json 2>&1 | grep '^{'
python3 -c "import torch.nn.attention as a; print([n for n in dir(a) if 'impl' in n.lower() or 'flash' in n.lower()]); a.activate_flash_attention_impl('FA3'); print('FA3 ok')" 2>&1 | tail -2
