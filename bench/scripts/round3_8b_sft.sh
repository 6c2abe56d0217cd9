# Round 3, call 3 (2 x H200): Llama-3-8B full SFT, data-parallel 2 with the distributed optimizer, 8 packs per step.
source bench/scripts/gpu_env.sh
export OMP_NUM_THREADS=4
timeout 200 python3 -m pytest -q -m gpu tests/unit/models 2>&1 | grep -E "passed|failed|rror" | tail -5
T="timeout 280 torchrun --nproc_per_node 2 -m bench.throughput --model llama3_8b --mode sft --seq 4096 --steps 3 --warmup 2"
$T --micro-batches 4 --systems ours:distopt+overlap --baseline none --out $OUT/h200x2_8b_sft_distopt_overlap.json 2>&1 | grep -E '^\{|Error|error' | head -20
$T --micro-batches 4 --systems ours:distopt --baseline none --out $OUT/h200x2_8b_sft_distopt.json 2>&1 | grep -E '^\{|Error|error' | head -20
