# Round 5, final figures: three calls of one warm H100 lease each (FA4 travels in two parts: see fa4_env.sh).
#   bash bench/scripts/round5_final.sh LEASE 1   (carry .whl .fa4a)  FA2 / HF side: FA4 not installed yet
#   bash bench/scripts/round5_final.sh LEASE 2   (carry .whl .fa4b)  install FA4 (+ quack), GPU tests, ours
#   bash bench/scripts/round5_final.sh LEASE 3   (carry .whl .fa4b)  the rest
# LEASE 2 ran with FA4 as the only change (results/round5/call*), LEASE 3 with the final code (f2call*).
[ "$2" = 1 ] || [ -f /tmp/fa4_cutlass_ir.so ] || { echo "call 1's machine was given back"; exit 3; }
source bench/scripts/gpu_env.sh > /dev/null 2>&1
source bench/scripts/fa4_env.sh
B="python3 -m bench.throughput --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none --model llama32_1b"
L="python3 -m bench.throughput --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none"
tests() { t0=$(date +%s); timeout 300 python3 -m pytest -q -m gpu "$@" 2>&1 | grep -E "passed|failed|^E " | tail -12
          echo "gpu tests: $(( $(date +%s) - t0 )) s"; }
prefix=call$2
case "$1/$2" in
  2/1) runs="B/2/4/ours:pure B/2/4/hf:compile B/8/1/hf:compile B/1/8/hf:compile L/4/2/ours" ;;
  2/2) timeout 200 python3 bench/scripts/probe_flash_cute.py > $OUT/call2_probe_flash_cute.txt 2>&1
       grep -E "^(==|fa)" $OUT/call2_probe_flash_cute.txt
       tests tests/unit/models tests/unit/training
       runs="B/2/4/ours:pure B/2/4/ours B/1/8/ours:pure+keeplogits" ;;
  2/3) runs="L/4/2/ours Lq/4/2/ours B/2/4/hf:fa4+compile B/2/4/ours:pure" ;;
  3/*) prefix=f2call$2 ;;&
  3/1) runs="B/1/8/hf:compile B/2/4/hf:compile B/8/1/hf:compile" ;;
  3/2) tests tests/unit/models tests/unit/training
       runs="B/1/8/ours:pure+keeplogits B/2/4/ours:pure B/2/4/ours" ;;
  3/3) tests tests/unit/models/test_quack_norm.py
       runs="B/1/8/ours:pure+keeplogits+torchnorm B/1/8/ours:pure+keeplogits+eager_scale B/1/8/ours:pure+keeplogits"
       runs="$runs B/2/4/hf:fa4+compile L/4/2/ours" ;;
esac
for run in $runs; do
  IFS=/ read kind m k s <<< "$run"
  case $kind in B) cmd=$B; name=1b ;; L) cmd="$L --model llama3_8b"; name=8b_lora ;; Lq) cmd="$L --model qwen3_8b"; name=qwen3_8b_lora ;; esac
  timeout 200 $cmd --micro-batches $m --packs-per-micro-batch $k --systems $s \
    --out $OUT/${prefix}_${name}_k${k}_${s//[:+]/_}.json 2>&1 | grep -E '^\{|Error'
done
