# Round 3, call 11 (same H100 lease as call 10, bench/scripts/round3_hf_compile.sh): ours beside HF + torch.compile.
source bench/scripts/gpu_env.sh
B="timeout 200 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours --out $OUT/h100_1b_sft_k2_ours_vs_compile.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems hf:compile --out $OUT/h100_1b_sft_k1_hf_compile.json 2>&1 | grep '^{'
$B --micro-batches 8 --packs-per-micro-batch 1 --systems ours --out $OUT/h100_1b_sft_k1_ours_vs_compile.json 2>&1 | grep '^{'
