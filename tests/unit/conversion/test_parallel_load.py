"""In-memory HF load into TP/PP-sharded models (2 gloo ranks), saved as training does, exported bit-exact."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoints_conv import export_megatron_to_hf
from checkpoints_conv.exporter import stored_embedding
from tests.unit.conversion.conftest import assert_same_state, hf_state

REPO = Path(__file__).resolve().parents[3]
LAYOUTS = [("qwen2", 2, 1), ("llama_tied", 1, 2)]  # GQA + qkv bias over TP 2; tied embeddings over PP 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.dist
def test_sharded_load_then_export_is_bit_exact(hf_models, tmp_path):
    jobs = [f"{hf_models[fam]}:{tmp_path / f'{fam}_tp{tp}_pp{pp}'}:{tp}:{pp}" for fam, tp, pp in LAYOUTS]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "tests.unit.conversion.dist_worker", *jobs]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for fam, tp, pp in LAYOUTS:
        ckpt = tmp_path / f"{fam}_tp{tp}_pp{pp}"
        assert stored_embedding(ckpt / "iter_0000005")[0] % (128 * tp) == 0  # padded for the saved layout
        out = export_megatron_to_hf(ckpt, tmp_path / f"{fam}_hf", show_progress=False)
        assert_same_state(hf_state(hf_models[fam]), hf_state(out))
