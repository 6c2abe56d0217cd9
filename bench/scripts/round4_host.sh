# Round 4, call 8 (one H100): host overhead. GPU tests with the direct flash path, the per-call host-time probe, then
# 1B SFT ours:pure with the direct kernels vs varlen_attn's custom ops (varlen_op), at 1 and 2 packs per micro-batch.
source bench/scripts/gpu_env.sh
timeout 200 python3 -m pytest -q -m gpu tests/unit/models tests/unit/training 2>&1 | grep -E "passed|failed|rror" | tail -5
timeout 120 python3 bench/scripts/probe_host_overhead.py 2>&1 | tee $OUT/probe_host_overhead.txt | grep -E "us per|error|torch "
B="timeout 110 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
for s in ours:pure ours:pure+varlen_op ours:pure+eager_rope; do
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $s --out $OUT/h100_1b_sft_k1_${s//[:+]/_}.json 2>&1 | grep '^{'
done
for s in ours:pure ours:pure+varlen_op; do
  $B --micro-batches 4 --packs-per-micro-batch 2 --systems $s --out $OUT/h100_1b_sft_k2_${s//[:+]/_}.json 2>&1 | grep '^{'
done
