# Sourced by the round scripts (round5_final.sh, round6.sh) on the device machine, as: source ... FIRST_CALL
# FIRST_CALL=1 for the call that carries .fa4a; later calls need its unpacked part still on the machine.
[ "$1" = 1 ] || [ -f /tmp/fa4_cutlass_ir.so ] || { echo "call 1's machine was given back"; exit 3; }
source bench/scripts/gpu_env.sh > /dev/null 2>&1
source bench/scripts/fa4_env.sh
B="python3 -m bench.throughput --mode sft --seq 4096 --steps 6 --warmup 3 --baseline none --model llama32_1b"
L="python3 -m bench.throughput --mode lora --seq 4096 --steps 3 --warmup 2 --baseline none"
tests() { t0=$(date +%s); timeout 300 python3 -m pytest -q -m gpu "$@" 2>&1 | grep -E "passed|failed|^E " | tail -12
          echo "gpu tests: $(( $(date +%s) - t0 )) s"; }
# run_all PREFIX "KIND/M/K/SYSTEM ...": one benchmark process per entry (B 1B SFT, L Llama-3-8B LoRA, Lq Qwen3-8B
# LoRA), JSON to $OUT/PREFIX_<model>_k<K>_<system>.json
run_all() {
  local prefix=$1 run kind m k s cmd name t0
  for run in $2; do
    IFS=/ read kind m k s <<< "$run"
    case $kind in B) cmd=$B; name=1b ;; L) cmd="$L --model llama3_8b"; name=8b_lora ;;
                  Lq) cmd="$L --model qwen3_8b"; name=qwen3_8b_lora ;; esac
    t0=$(date +%s)
    timeout 240 $cmd --micro-batches $m --packs-per-micro-batch $k --systems $s \
      --out $OUT/${prefix}_${name}_k${k}_${s//[:+]/_}.json 2>&1 | grep -E '^\{|Error'
    echo "($run: $(( $(date +%s) - t0 )) s)"
  done
}
