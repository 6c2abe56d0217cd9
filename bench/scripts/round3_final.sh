# Round 3, call 5 (one H100): the final defaults (compiled RoPE, LM-head wgrad into main_grad, LoRA addmm, one host
# sync per step, pinned batch copies): GPU tests, then 1B SFT ours/HF at 8 packs per step in one run, 8B LoRA.
source bench/scripts/gpu_env.sh
timeout 200 python3 -m pytest -q -m gpu tests/unit/models tests/unit/training 2>&1 | grep -E "passed|failed|rror" | tail -5
B="timeout 120 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --profile $OUT --out $OUT/h100_1b_sft_k2_ours_final.json 2>&1 | grep -E '^\{|Self CUDA time total'
$B --micro-batches 4 --packs-per-micro-batch 2 --systems hf --out $OUT/h100_1b_sft_k2_hf_final.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems ours --out $OUT/h100_1b_sft_k1_ours_final.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems hf --out $OUT/h100_1b_sft_k1_hf_final.json 2>&1 | grep '^{'
timeout 170 python3 -m bench.throughput --model llama3_8b --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none \
  --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_8b_lora_k2_ours_final.json 2>&1 | grep '^{'
