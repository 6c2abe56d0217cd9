"""Context-parallel split and attention, checked against CP=1 in one process (the all-gather is emulated)."""

import pytest
import torch
import torch.nn.functional as F

from sft_bridge_port.models.context_parallel import (
    build_layout,
    check_divisible,
    chunked_attention,
    expand_keys,
    local_token_index,
    prefix_mask,
)
from sft_bridge_port.models.rope import packed_positions


def _full_attention(q, k, v, docs, left=None):
    """CP=1 reference: causal (optionally banded) attention inside each document."""
    outs, start = [], 0
    for n in docs:
        qq, kk, vv = (x[start : start + n].transpose(0, 1)[None] for x in (q, k, v))
        i = torch.arange(n)
        dist = i[:, None] - i[None, :]
        mask = (dist >= 0) & (dist <= left) if left is not None else dist >= 0
        outs.append(F.scaled_dot_product_attention(qq, kk, vv, attn_mask=mask, enable_gqa=True)[0].transpose(0, 1))
        start += n
    return torch.cat(outs)


def test_split_is_the_documented_load_balanced_order():
    assert local_token_index([8, 4], 2, 0).tolist() == [0, 1, 6, 7, 8, 11]
    assert local_token_index([8, 4], 2, 1).tolist() == [2, 3, 4, 5, 9, 10]
    # one row of 8 tokens, CP=2: megatron's get_batch_on_this_cp_rank gives rank 0 chunks 0 and 3
    assert local_token_index([8], 2, 0).tolist() == [0, 1, 6, 7]


def test_ranks_partition_every_token_exactly_once():
    docs = [12, 0, 6, 18]
    parts = [local_token_index(docs, 3, r) for r in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(sum(docs)))
    assert {p.numel() for p in parts} == {sum(docs) // 3}


def test_lengths_not_multiple_of_two_cp_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="pad_seq_to_mult=4"):
        check_divisible([8, 6], 2)


def test_prefix_mask_aligns_queries_to_the_end_of_the_keys():
    assert prefix_mask(2, 4, None, torch.device("cpu")).int().tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert prefix_mask(2, 4, 1, torch.device("cpu")).int().tolist() == [[0, 1, 1, 0], [0, 0, 1, 1]]


def test_layout_positions_are_the_global_in_document_positions():
    docs = [8, 4, 12]
    global_pos = packed_positions(torch.tensor([0, 8, 12, 24]), 24)
    for rank in range(2):
        layout = build_layout(docs, 2, rank, torch.device("cpu"))
        assert torch.equal(layout.positions, global_pos[local_token_index(docs, 2, rank)])
    layout = build_layout(docs, 2, 0, torch.device("cpu"))
    assert layout.q_lengths == (2, 2, 1, 1, 3, 3) and layout.k_lengths == (2, 8, 1, 4, 3, 12)


@pytest.mark.parametrize("cp,left", [(2, None), (3, None), (2, 5)])
def test_cp_attention_equals_single_rank_attention(cp, left):
    """Each rank's output (its queries against the gathered keys) equals the CP=1 output at its tokens (GQA)."""
    torch.manual_seed(cp)
    docs = [8 * cp, 2 * cp, 0, 6 * cp, 4 * cp]
    total = sum(docs)
    q, k, v = torch.randn(total, 4, 8), torch.randn(total, 2, 8), torch.randn(total, 2, 8)
    full = _full_attention(q, k, v, docs, left)
    index = [local_token_index(docs, cp, r) for r in range(cp)]
    gathered = torch.cat([torch.stack((k[i], v[i]), dim=1) for i in index])  # what all_gather returns (rank-major)
    for rank in range(cp):
        layout = build_layout(docs, cp, rank, torch.device("cpu"))
        keys, values = expand_keys(gathered, layout)
        out = chunked_attention(q[index[rank]], keys, values, layout, scale=8**-0.5, left=left, dropout_p=0.0)
        torch.testing.assert_close(out, full[index[rank]], atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
def test_varlen_cp_path_matches_reference_on_cuda():
    """The fused varlen kernel's causal alignment (to the end of each key prefix) on the CP layout."""
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.transformer_config import TransformerConfig

    from sft_bridge_port.models.attention import SDPAttention

    cfg = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=2, attention_dropout=0.0)
    core = SDPAttention(cfg, 1, AttnMaskType.causal).cuda()
    docs, cp, dev = [64, 16, 128], 2, torch.device("cuda")
    total = sum(docs)
    q, k, v = (torch.randn(total, h, 16, device=dev, dtype=torch.bfloat16) for h in (4, 2, 2))
    index = [local_token_index(docs, cp, r).to(dev) for r in range(cp)]
    gathered = torch.cat([torch.stack((k[i], v[i]), dim=1) for i in index])
    for rank in range(cp):
        layout = build_layout(docs, cp, rank, dev)
        keys, values = expand_keys(gathered, layout)
        assert core._use_varlen(q)
        fused = core._varlen(q[index[rank]], keys, values, (layout.cu_q, layout.cu_k),
                             (layout.max_q, layout.max_k), None)
        ref = chunked_attention(q[index[rank]].float(), keys.float(), values.float(), layout, scale=0.25, left=None,
                                dropout_p=0.0)
        torch.testing.assert_close(fused.float(), ref, atol=2e-2, rtol=2e-2)
