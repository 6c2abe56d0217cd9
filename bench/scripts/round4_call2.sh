# Round 4, call 2 (one H100): keep_logits is now a default; GPU tests, the dense-attention probe, a profile of
# ours:pure, the 1-pack-per-micro-batch rows against HF + compile, and 8B LoRA with the new defaults.
source bench/scripts/gpu_env.sh
t0=$(date +%s)
timeout 120 python3 -m pytest -q -m gpu tests/unit/models/test_fused_gpu.py 2>&1 | grep -E "passed|failed|rror" | tail -5
echo "tests: $(( $(date +%s) - t0 )) s"
timeout 90 python3 bench/scripts/probe_attention_dense.py 0.25 2>&1 | tee $OUT/probe_attention_dense.txt | grep -v Warn
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours:pure --profile $OUT --out $OUT/h100_1b_sft_k2_ours_pure_profile.json 2>&1 | grep -E '^\{|Self CUDA time total'
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_1b_sft_k2_ours_defaults.json 2>&1 | grep '^{'
for s in ours:pure ours hf:compile; do
  t=$(date +%s)
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $s --out $OUT/h100_1b_sft_k1_${s//[:+]/_}.json 2>&1 | grep '^{'
  echo "$s: $(( $(date +%s) - t )) s"
done
timeout 150 python3 -m bench.throughput --model llama3_8b --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none \
  --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_8b_lora_k2_ours.json 2>&1 | grep '^{'
ls $OUT
