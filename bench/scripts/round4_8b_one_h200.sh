# Round 4, call 5 (one H200): 8B full SFT on a single GPU with mixed_precision='bf16_pure' (8 B/param: 64 GB of
# weights, grads and Adam moments; bf16_mixed's 18 B/param would need 145 GB). DP1, plain optimizer.
source bench/scripts/gpu_env.sh
B="timeout 250 python3 -m bench.throughput --model llama3_8b --mode sft --seq 4096 --steps 3 --warmup 2 --baseline none"
$B --micro-batches 8 --packs-per-micro-batch 1 --systems ours:pure --out $OUT/h200_8b_sft_k1_ours_pure.json 2>&1 | grep -E '^\{|Error'
$B --micro-batches 4 --packs-per-micro-batch 2 --systems ours:pure --out $OUT/h200_8b_sft_k2_ours_pure.json 2>&1 | grep -E '^\{|Error'
