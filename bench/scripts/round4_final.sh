# Round 4, call 3 (one H100): final code. GPU tests, then 1B SFT at 4 micro-batches x 2 packs in one lease:
# ours (bf16_mixed, Bridge's default), ours:pure (bf16_pure), HF + torch.compile, then ours:pure and ours again.
source bench/scripts/gpu_env.sh
t0=$(date +%s)
timeout 200 python3 -m pytest -q -m gpu tests/unit/models tests/unit/training 2>&1 | grep -E "passed|failed|rror" | tail -5
echo "tests: $(( $(date +%s) - t0 )) s"
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
n=0
for s in ours ours:pure hf:compile ours:pure ours; do
  n=$((n + 1))
  $B --micro-batches 4 --packs-per-micro-batch 2 --systems $s --out $OUT/h100_1b_sft_k2_${n}_${s//[:+]/_}.json 2>&1 | grep '^{'
done
