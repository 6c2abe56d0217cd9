# Round 5, check of the "auto" token floor (flash_cute.AUTO_MIN_TOKENS) on one H100, two calls of one warm lease:
#   bash bench/scripts/round5_check.sh 1   (carry .whl .fa4a)  1B ours:pure at 8 x 1 pack, FA4 not installed
#   bash bench/scripts/round5_check.sh 2   (carry .whl .fa4b)  FA4 + quack installed: GPU tests; 8 x 1 with "auto"
#                                          (4096 tokens per call: PyTorch's kernels) and with attention forced to FA4
[ "$1" = 1 ] || [ -f /tmp/fa4_cutlass_ir.so ] || { echo "call 1's machine was given back"; exit 3; }
source bench/scripts/gpu_env.sh > /dev/null 2>&1
source bench/scripts/fa4_env.sh
B="timeout 200 python3 -m bench.throughput --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none --model llama32_1b"
if [ "$1" = 2 ]; then
  timeout 200 python3 -m pytest -q -m gpu tests/unit/models 2>&1 | grep -E "passed|failed|^E " | tail -8
  specs="ours:pure ours:pure+fa4"
else
  specs="ours:pure"
fi
for s in $specs; do
  $B --micro-batches 8 --packs-per-micro-batch 1 --systems $s --out $OUT/check$1_1b_k1_${s//[:+]/_}.json 2>&1 | grep -E '^\{|Error'
done
