# Round 3, call 6 (one H100): A/B of the host-side changes at 8 x [1 pack] micro-batches (each variant undoes one).
source bench/scripts/gpu_env.sh
B="timeout 120 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
for v in ours ours:sync_nan ours:pageable ours:eager_rope ours:sync_nan+pageable+eager_rope; do
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $v --out $OUT/h100_1b_sft_k1_ab_${v/:/_}.json 2>&1 | grep '^{'
done
