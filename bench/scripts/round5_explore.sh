# Round 5, calls 1-3 of one H100 lease (first look; the figures that count come from round5_final_*.sh).
# Call 1 (carry .whl .fa4a): FA2 figures while FA4 is not installed yet; call 2 (carry .whl .fa4b): install FA4,
# probe_flash_cute.py, the FA4 GPU tests, ours:pure with FA4; call 3: FA4's host profile, HF with FA4, 2 x 4 packs.
source bench/scripts/gpu_env.sh
source bench/scripts/fa4_env.sh
B="timeout 150 python3 -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none"
case "$1" in
  1) specs="8/1/ours:pure 8/1/hf:compile 4/2/ours:pure" ;;
  2) timeout 240 python3 bench/scripts/probe_flash_cute.py > $OUT/probe_flash_cute.txt 2>&1
     timeout 150 python3 -m pytest -q -m gpu tests/unit/models/test_flash_cute.py tests/unit/models/test_flash_varlen.py \
       tests/unit/models/test_context_parallel.py 2>&1 | tail -3
     specs="8/1/ours:pure 4/2/ours:pure" ;;
  3) timeout 120 python3 bench/scripts/profile_flash_cute_host.py > $OUT/profile_fa4_host.txt 2>&1
     specs="8/1/hf:fa4 8/1/hf:fa4+compile 2/4/ours:pure 2/4/hf:compile 4/2/hf:fa4+compile" ;;
esac
for spec in $specs; do
  IFS=/ read m k s <<< "$spec"
  $B --micro-batches $m --packs-per-micro-batch $k --systems $s --out $OUT/call$1_1b_k${k}_${s//[:+]/_}.json 2>&1 | grep -E '^\{|Error'
done
