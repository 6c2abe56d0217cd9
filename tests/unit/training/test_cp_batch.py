"""The training engine's context-parallel batch split (``batch.context_parallel_slice``), on real collated batches."""

import numpy as np
import pytest
import torch

from sft_bridge_port.data.collate import collate_packed
from sft_bridge_port.training.batch import context_parallel_slice, get_packed_seq_params


def _pack(pad_mult: int) -> dict:
    ids = np.arange(3, 29)  # three samples of 9, 6 and 11 tokens (shifted: 8, 5, 10)
    pack = {"input_ids": ids, "loss_mask": np.ones_like(ids), "seq_start_id": [0, 9, 15]}
    return collate_packed([pack], pad_id=0, pack_size=32, pad_to_max_length=True, pad_mult=pad_mult)


def test_packed_split_keeps_chunks_r_and_mirror_of_every_sample_and_global_cu_seqlens():
    batch = _pack(4)
    assert batch["cu_seqlens"][0, :5].tolist() == [0, 8, 16, 28, 32]  # padded to multiples of 4, + tail
    rank0 = context_parallel_slice(batch, cp_size=2, cp_rank=0)
    rank1 = context_parallel_slice(batch, cp_size=2, cp_rank=1)
    # sample 0 (tokens 3..10): rank 0 gets chunks 0 and 3 -> ids 3,4 and 9,10; positions stay in-sample
    assert rank0["tokens"][0, :4].tolist() == [3, 4, 9, 10]
    assert rank0["position_ids"][0, :4].tolist() == [0, 1, 6, 7]
    assert rank1["position_ids"][0, :4].tolist() == [2, 3, 4, 5]
    for key in ("tokens", "labels", "loss_mask", "position_ids"):
        assert rank0[key].shape == rank1[key].shape == (1, 16)
    assert rank0["loss_mask"].sum() + rank1["loss_mask"].sum() == batch["loss_mask"].sum()
    assert torch.equal(rank0["cu_seqlens"], batch["cu_seqlens"])  # attention derives the local layout itself
    assert get_packed_seq_params(rank0).cu_seqlens_q_padded.tolist() == [0, 8, 16, 28, 32]


def test_packed_without_pad_seq_to_mult_names_the_fix():
    with pytest.raises(ValueError, match=r"pad_seq_to_mult=4"):
        context_parallel_slice(_pack(1), cp_size=2, cp_rank=0)


def test_unpacked_rows_follow_megatrons_split():
    tokens = torch.arange(16).view(2, 8)
    batch = {"tokens": tokens, "labels": tokens + 1, "loss_mask": torch.ones(2, 8), "position_ids": tokens % 8}
    out = context_parallel_slice(batch, cp_size=2, cp_rank=1)
    assert out["tokens"].tolist() == [[2, 3, 4, 5], [10, 11, 12, 13]]
    assert out["position_ids"].tolist() == [[2, 3, 4, 5], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="multiple of 4"):
        context_parallel_slice({k: v[:, :6] for k, v in batch.items()}, cp_size=2, cp_rank=0)


def test_cp1_returns_the_batch_unchanged():
    batch = _pack(1)
    assert context_parallel_slice(batch, cp_size=1)["tokens"] is batch["tokens"]
