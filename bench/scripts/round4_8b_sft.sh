# Round 4, call 4 (2 x H200): 8B full SFT, DP2 + distributed optimizer, with round 4's defaults (LM-head logits kept).
source bench/scripts/gpu_env.sh
for s in ours:distopt+overlap ours:distopt+overlap+recompute_logits; do
  timeout 280 torchrun --nproc_per_node 2 -m bench.throughput --model llama3_8b --mode sft --seq 4096 --steps 3 \
    --warmup 2 --micro-batches 4 --systems $s --baseline none --out $OUT/h200x2_8b_sft_${s//[:+]/_}.json 2>&1 | grep '^{'
done
