# Round 6: SwiGLU in quack's GEMM epilogues (models/quack_mlp.py). Calls of one warm H100 lease (quack travels
# with FA4 in two parts: see fa4_env.sh):
#   bash bench/scripts/round6.sh 1   (carry .whl .fa4a)  HF baselines (FA4/quack not needed), unpack part 1
#   bash bench/scripts/round6.sh 2   (carry .whl .fa4b)  install FA4 + quack, MLP probe (autotunes), ours 1x8
#   bash bench/scripts/round6.sh 3   (carry .whl .fa4b)  GPU test of the fused MLP, A/B fused vs megatron's MLP
#   bash bench/scripts/round6.sh 4   (carry .whl .fa4b)  GPU tests, second 1x8 pair, 8B LoRA (adapters keep megatron's MLP)
source bench/scripts/round_common.sh "$1"
case "$1" in
  1) runs="B/1/8/hf:compile B/2/4/hf:compile" ;;
  2) t0=$(date +%s); timeout 330 python3 bench/scripts/probe_quack_mlp.py > $OUT/call2_probe_quack_mlp.txt 2>&1
     tail -n 30 $OUT/call2_probe_quack_mlp.txt; echo "probe: $(( $(date +%s) - t0 )) s"
     runs="B/1/8/ours:pure+keeplogits" ;;
  3) tests tests/unit/models/test_quack_mlp.py
     runs="B/1/8/ours:pure+keeplogits+torchmlp B/1/8/ours:pure+keeplogits B/2/4/ours:pure" ;;
  4) tests tests/unit/models tests/unit/training
     runs="B/1/8/ours:pure+keeplogits B/1/8/hf:compile L/4/2/ours" ;;
esac
run_all call$1 "$runs"
