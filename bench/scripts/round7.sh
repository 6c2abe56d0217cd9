# Round 7: where the last milliseconds of a 1x8 1B step go, and the changes they led to. Calls of warm H100 leases
# (quack travels with FA4 in two parts: see fa4_env.sh). quack's autotune results go to /tmp/quack_cache, seeded
# from a carried .quackcache and copied back to $OUT/quack_cache (JSON only), so a later lease skips the tuning.
# Lease 1 (before the changes):
#   bash bench/scripts/round7.sh 1   (carry .whl .fa4a)                unpack part 1
#   bash bench/scripts/round7.sh 2   (carry .whl .fa4b)                install, profile ours 1x8, CE probe
#   bash bench/scripts/round7.sh 3   (carry .whl .fa4b)                GEMM shapes: cuBLAS vs quack
# Lease 2 (quack CE + head GEMMs, fc2 weight gradient on quack, residual adds inside the next RMSNorm):
#   bash bench/scripts/round7.sh 4   (carry .whl .fa4a)                HF + SDPA + compile 1x8, unpack part 1
#   bash bench/scripts/round7.sh 5   (carry .whl .fa4b .quackcache)    GPU tests, ours 1x8 (profiled)
#   bash bench/scripts/round7.sh 6   (carry .whl .fa4b .quackcache)    A/B of each change, second pair with HF
#   bash bench/scripts/round7.sh 7   (carry .whl .fa4b .quackcache)    bf16_mixed 1x8, Bridge's 8x1 packing, 8B LoRA
#   bash bench/scripts/round7.sh 8   (carry .whl .fa4b .quackcache)    8x1 A/B (host cost of the new paths), bf16_mixed 1x8
# Lease 3 (the final code):
#   bash bench/scripts/round7.sh 9   (carry .whl .fa4a)                HF + SDPA + compile 1x8, unpack part 1
#   bash bench/scripts/round7.sh 10  (carry .whl .fa4b .quackcache)    GPU tests, LM-head GEMMs quack vs cuBLAS, ours
# Leases 4 and 5 (GPU tests after each review mend): round7.sh 1 (carry .whl .fa4a), then round7.sh 11 (.whl .fa4b)
source bench/scripts/round_common.sh "$(( $1 == 4 || $1 == 9 ? 1 : $1 ))"
export QUACK_CACHE_DIR=/tmp/quack_cache
mkdir -p $QUACK_CACHE_DIR && [ -d .quackcache ] && cp -rn .quackcache/. $QUACK_CACHE_DIR/
probe() { local t0=$(date +%s); timeout $1 python3 bench/scripts/$2.py > $OUT/call${CALL}_$2.txt 2>&1
          tail -n 25 $OUT/call${CALL}_$2.txt; echo "$2: $(( $(date +%s) - t0 )) s"; }
CALL=$1
P="B/1/8/ours:pure+keeplogits"
case "$1" in
  1) runs="" ;;
  2) t0=$(date +%s)
     timeout 330 $B --micro-batches 1 --packs-per-micro-batch 8 --systems ours:pure+keeplogits --profile $OUT/prof \
       --out $OUT/call2_1b_k8_ours_pure_keeplogits.json 2>&1 | grep -E '^\{|Error|Self CUDA|^-|  [0-9.]+ms  ' | head -40
     echo "profiled run: $(( $(date +%s) - t0 )) s"
     probe 120 probe_ce; runs="" ;;
  3) probe 540 probe_gemm_shapes; runs="" ;;
  4|9) runs="B/1/8/hf:compile" ;;
  5) tests tests/unit/models/test_quack_ce.py tests/unit/models/test_residual_norm.py tests/unit/models/test_quack_mlp.py \
       tests/unit/models/test_quack_norm.py tests/unit/models/test_linear_ce.py
     t0=$(date +%s)
     timeout 300 $B --micro-batches 1 --packs-per-micro-batch 8 --systems ours:pure+keeplogits --profile $OUT/prof \
       --out $OUT/call5_1b_k8_ours_pure_keeplogits.json 2>&1 | grep -E '^\{|Error' | head -5
     echo "profiled run: $(( $(date +%s) - t0 )) s"; runs="" ;;
  6) runs="$P+torchce $P+mcore_add $P B/1/8/hf:compile" ;;
  7) runs="B/1/8/ours+keeplogits B/8/1/ours:pure L/4/2/ours" ;;  # (the first spec is mistyped: it did not run)
  8) runs="B/8/1/ours:pure+torchce+mcore_add B/8/1/ours:pure B/1/8/ours:keeplogits" ;;
  10) tests tests/unit/models tests/unit/training
      runs="$P $P+cublas_head $P $P+cublas_head" ;;
  11) tests tests/unit/models tests/unit/training; runs="" ;;
esac
run_all call$1 "$runs"
mkdir -p $OUT/quack_cache && (cd $QUACK_CACHE_DIR && find . -name '*.autotune.json' -exec cp --parents {} $OUT/quack_cache/ \;)
