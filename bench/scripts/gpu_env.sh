# Source on the device machine: megatron-core + datasets wheels (carried in .whl/, see shared/reference/gpu_facts.md).
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
export OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -c "import torch, megatron.core, transformers; print(torch.cuda.get_device_name(), torch.__version__, megatron.core.__version__, transformers.__version__)"
