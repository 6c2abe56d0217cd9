# Round 4, call 10 (one H100): A/B of RoPE as one compiled call for q and k (default) vs one per tensor (round 3),
# 1B SFT ours:pure, alternating, at 2 and 1 packs per micro-batch.
source bench/scripts/gpu_env.sh
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
n=0
for s in ours:pure ours:pure+rope_separate ours:pure ours:pure+rope_separate; do
  n=$((n + 1))
  $B --micro-batches 4 --packs-per-micro-batch 2 --systems $s --out $OUT/h100_1b_sft_k2_${n}_${s//[:+]/_}.json 2>&1 | grep '^{'
done
for s in ours:pure+rope_separate ours:pure; do
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $s --out $OUT/h100_1b_sft_k1_${s//[:+]/_}.json 2>&1 | grep '^{'
done
