# Round 5, final figures: three calls of one warm H100 lease each (FA4 travels in two parts: see fa4_env.sh).
#   bash bench/scripts/round5_final.sh LEASE 1   (carry .whl .fa4a)  FA2 / HF side: FA4 not installed yet
#   bash bench/scripts/round5_final.sh LEASE 2   (carry .whl .fa4b)  install FA4 (+ quack), GPU tests, ours
#   bash bench/scripts/round5_final.sh LEASE 3   (carry .whl .fa4b)  the rest
# LEASE 2 ran with FA4 as the only change (results/round5/call*), LEASE 3 with the final code (f2call*).
source bench/scripts/round_common.sh "$2"
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
run_all $prefix "$runs"
