# Round 3, call 10 (one H100): HF's best shot, transformers + torch.compile (whole model) on the same 4 x [2 packs].
source bench/scripts/gpu_env.sh
timeout 560 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none \
  --micro-batches 4 --packs-per-micro-batch 2 --systems hf:compile --out $OUT/h100_1b_sft_k2_hf_compile.json 2>&1 \
  | grep -E '^\{|Error|error' | tail -5
