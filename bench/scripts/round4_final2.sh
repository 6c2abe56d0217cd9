# Round 4, call 9 (one H100): final code (direct flash kernels, one compiled RoPE call for q and k). GPU tests,
# the host-time probe, then 1B SFT in one lease at 1 and 2 packs per micro-batch: ours:pure, ours, HF + compile.
source bench/scripts/gpu_env.sh
timeout 200 python3 -m pytest -q -m gpu tests/unit/models tests/unit/training 2>&1 | grep -E "passed|failed|rror" | tail -5
timeout 120 python3 bench/scripts/probe_host_overhead.py 2>&1 | tee $OUT/probe_host_overhead.txt | grep -E "us per|error|torch "
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
for s in ours:pure ours hf:compile; do
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $s --out $OUT/h100_1b_sft_k1_${s//[:+]/_}.json 2>&1 | grep '^{'
done
for s in ours:pure ours hf:compile; do
  $B --micro-batches 4 --packs-per-micro-batch 2 --systems $s --out $OUT/h100_1b_sft_k2_${s//[:+]/_}.json 2>&1 | grep '^{'
done
