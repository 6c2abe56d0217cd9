# Round 3, call 2 (one H100): Llama-3-8B LoRA (8 packs of 4096 per step), one system per process, + a 1B profile.
source bench/scripts/gpu_env.sh
B="timeout 170 python3 -m bench.throughput --model llama3_8b --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_8b_lora_k2_ours.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems ours --out $OUT/h100_8b_lora_k1_ours.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems hf --out $OUT/h100_8b_lora_k1_hf.json 2>&1 | grep '^{'
timeout 150 python3 -m bench.throughput --model llama32_1b --seq 4096 --steps 6 --warmup 3 --micro-batches 4 \
  --packs-per-micro-batch 2 --systems ours --baseline none --profile $OUT --out $OUT/h100_1b_sft_k2_ours_rope_default.json \
  2>&1 | grep -E '^\{|Self CUDA time total'
timeout 60 python3 -m pytest -q -m gpu tests/unit/models/test_gpu.py 2>&1 | tail -2
