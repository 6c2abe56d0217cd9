#!/usr/bin/env bash
# The two Quickstart commands: `./quickstart.sh demo` and `./quickstart.sh test`.
# Each creates .venv on first use (CPU torch 2.13.0 from pip, the package with its test extras), then runs.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${SFT_BRIDGE_PORT_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
if ! "$VENV/bin/python" -c "import sft_bridge_port, megatron.core, pytest" >/dev/null 2>&1; then
  # torch first, pinned, so pip takes the local CPU wheel instead of a multi-GB CUDA build.
  "$VENV/bin/python" -c "import torch" >/dev/null 2>&1 || "$VENV/bin/python" -m pip install -q "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q -e ".[test]"
fi
cmd="${1:-demo}"; shift || true
case "$cmd" in
  demo) exec "$VENV/bin/python" -m sft_bridge_port demo "$@" ;;
  test)
    set +e
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
    rc=$?
    # pytest exits 5 when it collected no test: that must never pass as green.
    if [ "$rc" -eq 5 ]; then echo "quickstart: pytest collected no tests" >&2; exit 1; fi
    exit "$rc" ;;
  *) echo "usage: ./quickstart.sh demo|test [args]" >&2; exit 2 ;;
esac
