"""The pure tensor transforms: worked examples, exact inverses, conservation of elements."""

from __future__ import annotations

import pytest
import torch

from checkpoints_conv import transforms as T


def _rows(prefix: str, n: int, width: int = 3) -> torch.Tensor:
    # row i of "q" holds 100*ord + i, so the interleaved order can be read off the first column
    return torch.stack([torch.full((width,), float(ord(prefix) * 100 + i)) for i in range(n)])


def test_interleave_qkv_groups_heads_with_their_kv():
    # 4 heads, 2 groups, head_dim 1: [q0 q1 k0 v0 q2 q3 k1 v1]
    q, k, v = _rows("q", 4), _rows("k", 2), _rows("v", 2)
    out = T.interleave_qkv(q, k, v, num_heads=4, num_groups=2, head_dim=1)
    order = [q[0], q[1], k[0], v[0], q[2], q[3], k[1], v[1]]
    assert torch.equal(out, torch.stack(order))


@pytest.mark.parametrize("heads,groups,head_dim", [(4, 4, 2), (4, 2, 3), (8, 1, 2), (6, 3, 4)])
@pytest.mark.parametrize("bias", [False, True])
def test_qkv_round_trip_is_bit_exact(heads, groups, head_dim, bias):
    hidden = 5
    rest = () if bias else (hidden,)
    q = torch.randn(heads * head_dim, *rest)
    k = torch.randn(groups * head_dim, *rest)
    v = torch.randn(groups * head_dim, *rest)
    fused = T.interleave_qkv(q, k, v, heads, groups, head_dim)
    assert fused.shape == ((heads + 2 * groups) * head_dim, *rest)
    q2, k2, v2 = T.split_qkv(fused, heads, groups, head_dim)
    assert torch.equal(q, q2) and torch.equal(k, k2) and torch.equal(v, v2)


def test_gate_up_merge_split_and_tp_shards_split_each_half():
    gate, up = _rows("g", 4), _rows("u", 4)
    fc1 = T.merge_gate_up(gate, up)
    assert torch.equal(fc1, torch.cat([gate, up]))
    g2, u2 = T.split_gate_up(fc1)
    assert torch.equal(g2, gate) and torch.equal(u2, up)
    shards = [T.tp_shard_gate_up(fc1, r, 2) for r in range(2)]
    # rank 1 holds [g2 g3 u2 u3], not the second half of the concatenation
    assert torch.equal(shards[1], torch.cat([gate[2:], up[2:]]))
    assert torch.equal(T.tp_unshard_gate_up(shards), fc1)


def test_vocab_pad_unpad():
    emb = torch.randn(5, 3)
    padded = T.pad_vocab(emb, 8)
    assert padded.shape == (8, 3) and torch.equal(padded[:5], emb) and not padded[5:].any()
    assert torch.equal(T.unpad_vocab(padded, 5), emb)
    assert T.pad_vocab(emb, 5) is emb


@pytest.mark.parametrize("axis", [0, 1, None])
def test_tp_shard_unshard(axis):
    t = torch.randn(8, 6)
    shards = [T.tp_shard(t, axis, r, 2) for r in range(2)]
    if axis is not None:
        assert shards[1].shape[axis] == t.shape[axis] // 2
    assert torch.equal(T.tp_unshard(shards, axis), t)


def test_element_count_is_checked():
    with pytest.raises(AssertionError, match="element count|does not split"):
        T.tp_shard(torch.randn(5, 2), 0, 0, 2)
