"""In-memory HF load into TP/PP-sharded models (2 gloo ranks), saved as training does, exported bit-exact."""

from __future__ import annotations

import pytest

from checkpoints_conv import export_megatron_to_hf
from checkpoints_conv.exporter import stored_embedding
from tests.unit.conversion.conftest import assert_same_state, hf_state
from tests.unit.torchrun import run_torchrun

LAYOUTS = [("qwen2", 2, 1), ("llama_tied", 1, 2)]  # GQA + qkv bias over TP 2; tied embeddings over PP 2


@pytest.mark.dist
def test_sharded_load_then_export_is_bit_exact(hf_models, tmp_path):
    jobs = [f"{hf_models[fam]}:{tmp_path / f'{fam}_tp{tp}_pp{pp}'}:{tp}:{pp}" for fam, tp, pp in LAYOUTS]
    run_torchrun("tests.unit.conversion.dist_worker", *jobs)
    for fam, tp, pp in LAYOUTS:
        ckpt = tmp_path / f"{fam}_tp{tp}_pp{pp}"
        assert stored_embedding(ckpt / "iter_0000005")[0] % (128 * tp) == 0  # padded for the saved layout
        out = export_megatron_to_hf(ckpt, tmp_path / f"{fam}_hf", show_progress=False)
        assert_same_state(hf_state(hf_models[fam]), hf_state(out))
