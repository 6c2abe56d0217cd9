# Round 4, call 1 (one H100): GPU tests of the new code, then the A/B of bf16_pure (no fp32 master weights) and
# linear_ce_keep_logits (no LM-head recompute) at 4 micro-batches x 2 packs, one system per process, HF + compile last.
source bench/scripts/gpu_env.sh
t0=$(date +%s)
timeout 150 python3 -m pytest -q -m gpu tests/unit/models/test_fused_gpu.py tests/unit/training/test_bf16_pure.py 2>&1 | grep -E "passed|failed|rror" | tail -5
echo "tests: $(( $(date +%s) - t0 )) s"
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
for s in ours ours:pure+keeplogits ours:pure ours:keeplogits hf:compile; do
  t=$(date +%s)
  $B --micro-batches 4 --packs-per-micro-batch 2 --systems $s --out $OUT/h100_1b_sft_k2_${s//[:+]/_}.json 2>&1 | grep '^{'
  echo "$s: $(( $(date +%s) - t )) s"
done
