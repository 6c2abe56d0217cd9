# Round 4, call 6 (one H200, right after call 5): HF + torch.compile on the same 8B full-SFT workload (pure bf16).
source bench/scripts/gpu_env.sh
timeout 420 python3 -m bench.throughput --model llama3_8b --mode sft --seq 4096 --steps 3 --warmup 2 --baseline none \
  --micro-batches 8 --packs-per-micro-batch 1 --systems hf:compile --out $OUT/h200_8b_sft_k1_hf_compile.json 2>&1 | grep -E '^\{|Error'
