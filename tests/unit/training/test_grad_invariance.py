"""The gradient of a global batch must not depend on how it is split into micro-batches or DP ranks."""

import pytest
import torch

from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.training.grad_split import GLOBAL_BATCH, split_grads
from tests.unit.training.helpers import collate
from tests.unit.torchrun import run_torchrun

SPLITS = {"1x4": [GLOBAL_BATCH], "2x2": [GLOBAL_BATCH[:2], GLOBAL_BATCH[2:]], "4x1": [[i] for i in GLOBAL_BATCH]}


def _max_diff(a, b):
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference():
    counts = collate(GLOBAL_BATCH)["loss_mask"].sum(dim=1).tolist()
    assert len(set(counts)) > 1, f"the test needs uneven supervised-token counts, got {counts}"
    with parallel_context():
        return {name: split_grads(split) for name, split in SPLITS.items()}


def test_splits_give_the_same_loss_and_gradients(reference):
    total, grads = reference["1x4"]
    for name in ("2x2", "4x1"):
        other_total, other_grads = reference[name]
        assert torch.allclose(other_total, total, rtol=1e-6), name
        assert _max_diff(grads, other_grads) < 1e-6, name
    assert max(g.abs().max().item() for g in grads.values()) > 1e-3  # gradients are not trivially zero


def test_naive_per_microbatch_mean_differs(reference):
    _, grads = reference["1x4"]
    with parallel_context():
        _, naive = split_grads(SPLITS["4x1"], per_token=False)
    assert _max_diff(grads, naive) > 1e-4


def test_two_data_parallel_ranks_match_one_process(reference, tmp_path):
    out = tmp_path / "rank0.pt"
    run_torchrun("tests.unit.training.grad_split", str(out))
    got = torch.load(out, weights_only=True)
    total, grads = reference["1x4"]
    assert torch.allclose(got["total"], total, rtol=1e-6)
    assert _max_diff(grads, got["grads"]) < 1e-6
