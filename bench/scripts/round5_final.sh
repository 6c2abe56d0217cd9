# Round 5, final figures: three calls of one warm H100 lease (FA4 travels in two parts: see fa4_env.sh).
#   bash bench/scripts/round5_final.sh 1   (carry .whl .fa4a)  FA2 side: FA4 not installed yet
#   bash bench/scripts/round5_final.sh 2   (carry .whl .fa4b)  install FA4, GPU tests, ours with FA4
#   bash bench/scripts/round5_final.sh 3   (carry .whl .fa4b)  8B LoRA with FA4, HF with FA4
[ "$1" = 1 ] || [ -f /tmp/fa4_cutlass_ir.so ] || { echo "call 1's machine was given back"; exit 3; }
source bench/scripts/gpu_env.sh > /dev/null 2>&1
source bench/scripts/fa4_env.sh
B="python3 -m bench.throughput --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none --model llama32_1b"
L="python3 -m bench.throughput --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none"
case "$1" in
  1) runs="B/2/4/ours:pure B/2/4/hf:compile B/8/1/hf:compile B/1/8/hf:compile L/4/2/ours" ;;
  2) t0=$(date +%s)
     timeout 200 python3 bench/scripts/probe_flash_cute.py > $OUT/call2_probe_flash_cute.txt 2>&1; grep -E "^(==|fa)" $OUT/call2_probe_flash_cute.txt
     timeout 300 python3 -m pytest -q -m gpu tests/unit/models tests/unit/training 2>&1 | grep -E "passed|failed|rror" | tail -5
     echo "gpu tests: $(( $(date +%s) - t0 )) s"
     runs="B/2/4/ours:pure B/2/4/ours B/1/8/ours:pure+keeplogits" ;;
  3) runs="L/4/2/ours Lq/4/2/ours B/2/4/hf:fa4+compile B/2/4/ours:pure" ;;
esac
for run in $runs; do
  IFS=/ read kind m k s <<< "$run"
  case $kind in B) cmd=$B; name=1b ;; L) cmd="$L --model llama3_8b"; name=8b_lora ;; Lq) cmd="$L --model qwen3_8b"; name=qwen3_8b_lora ;; esac
  timeout 200 $cmd --micro-batches $m --packs-per-micro-batch $k --systems $s \
    --out $OUT/call$1_${name}_k${k}_${s//[:+]/_}.json 2>&1 | grep -E '^\{|Error'
done
