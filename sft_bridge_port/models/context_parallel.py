"""Context parallelism (CP) without Transformer Engine: the load-balanced sequence split and all-gather attention.

With CP = P, every document (a packed sub-sequence, or the whole row of an unpacked batch) is cut into 2·P equal
chunks and CP rank ``r`` keeps chunks ``r`` and ``2P-1-r``: causal attention costs grow along a sequence, so pairing
an early chunk with a late one gives every rank the same work. This is megatron-core's
``get_batch_on_this_cp_rank`` order and Transformer Engine's THD order (per document, documents kept in order).
Example, P = 2, two documents of 8 and 4 tokens (``cu_seqlens = [0, 8, 12]``, chunks of 2 and 1 tokens)::

    global   a0 a1 | a2 a3 | a4 a5 | a6 a7 || b0 | b1 | b2 | b3
    rank 0   a0 a1                   a6 a7    b0             b3      -> global positions 0 1 6 7 0 3
    rank 1          a2 a3   a4 a5                  b1   b2           -> global positions 2 3 4 5 1 2

Attention: each rank all-gathers K and V of the CP group (its backward reduce-scatters their gradients), puts them
back in global order, and lets each local query chunk ``j`` of a document attend to that document's key prefix
``[0, (j+1)·c)`` with a causal mask aligned to the prefix end (the chunk's tokens are the prefix's last ``c``).
The result equals CP=1 attention: the same keys, the same mask, in global positions. Memory per rank: the whole
group's K/V plus each query chunk's prefix (about ``(2P+1)/(2P)`` of the global K/V); ``config.cp_comm_type``
(p2p ring, a2a) is not used: this is the all-gather scheme.

``PackedSeqParams`` keep the *global* (whole-pack) ``cu_seqlens`` under CP, as with Transformer Engine; the local
layout is derived from them here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

LAYOUT_ATTR = "_sbp_cp_layout"
SLICED_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def cp_group_of(pg_collection: Any = None) -> Any:
    """The context-parallel process group: ``pg_collection.cp`` when given, else megatron's global one."""
    group = getattr(pg_collection, "cp", None) if pg_collection is not None else None
    if group is not None:
        return group
    from megatron.core import parallel_state

    return parallel_state.get_context_parallel_group()


def check_divisible(doc_lengths: Sequence[int], cp_size: int) -> None:
    """Raise ValueError unless every (padded) document length is a multiple of ``2·cp_size``."""
    bad = [n for n in doc_lengths if n % (2 * cp_size)]
    if bad:
        raise ValueError(
            f"context_parallel_size={cp_size} splits every packed sub-sequence into {2 * cp_size} equal chunks, but "
            f"sub-sequence lengths {bad[:8]} are not multiples of {2 * cp_size}; set "
            f"dataset.packed_sequence_specs.pad_seq_to_mult={2 * cp_size} (and a packed_sequence_size / seq_length "
            f"divisible by {2 * cp_size})"
        )


def local_token_index(doc_lengths: Sequence[int], cp_size: int, cp_rank: int) -> torch.Tensor:
    """Global token indices (int64) that CP rank ``cp_rank`` keeps, in local order.

    >>> local_token_index([8, 4], 2, 0).tolist()
    [0, 1, 6, 7, 8, 11]
    >>> local_token_index([8, 4], 2, 1).tolist()
    [2, 3, 4, 5, 9, 10]
    """
    check_divisible(doc_lengths, cp_size)
    parts, start = [], 0
    for n in doc_lengths:
        c = n // (2 * cp_size)
        for j in (cp_rank, 2 * cp_size - 1 - cp_rank):
            parts.append(torch.arange(start + j * c, start + (j + 1) * c))
        start += n
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def _host_lengths(cu_seqlens: torch.Tensor) -> list[int]:
    bounds = cu_seqlens.reshape(-1).tolist()
    return [b - a for a, b in zip(bounds[:-1], bounds[1:])]


def partition_packed_batch(batch: Mapping[str, Any], cu_seqlens: torch.Tensor, cp_size: int, cp_rank: int) -> dict:
    """This CP rank's share of a packed one-row batch: ``tokens/labels/loss_mask/position_ids`` keep the tokens of
    :func:`local_token_index`; everything else (``cu_seqlens``, ``max_seqlen``...) stays global.

    Args:
        cu_seqlens: the trimmed (no -1) *padded* boundaries of the row, covering all ``s`` tokens.
    """
    lengths = _host_lengths(cu_seqlens)
    seq = batch["tokens"].shape[1]
    if sum(lengths) != seq:
        raise ValueError(
            f"cu_seqlens covers {sum(lengths)} tokens but the packed row holds {seq}; context parallelism needs "
            "boundaries over the whole row (the collate's trailing-padding segment included)"
        )
    index = local_token_index(lengths, cp_size, cp_rank)
    out = dict(batch)
    for key in SLICED_KEYS:
        value = batch.get(key)
        if value is not None:
            out[key] = value.index_select(1, index.to(value.device))
    return out


@dataclasses.dataclass(eq=False)
class CPLayout:
    """Index tensors for CP attention over one batch (built once, shared by every layer).

    Local queries form ``2·n`` chunks (two per non-empty document); chunk ``i`` attends to keys
    ``cu_k[i]:cu_k[i+1]`` of the expanded key tensor ``gathered[key_index]``.
    """

    cp_size: int
    local_tokens: int  # this rank's token count
    positions: torch.Tensor  # [local_tokens] int64, global in-document position of each local token (RoPE)
    key_index: torch.Tensor  # [total_k] int64, rows of the all-gathered [P * local_tokens] keys, per query chunk
    cu_q: torch.Tensor  # [2n + 1] int32
    cu_k: torch.Tensor  # [2n + 1] int32
    max_q: int
    max_k: int
    q_lengths: tuple[int, ...]  # host copies for the reference path
    k_lengths: tuple[int, ...]
    cache: dict = dataclasses.field(default_factory=dict, repr=False)  # per-batch values shared by layers (RoPE)


def build_layout(doc_lengths: Sequence[int], cp_size: int, cp_rank: int, device: torch.device) -> CPLayout:
    """The :class:`CPLayout` of documents with (global, padded) lengths ``doc_lengths`` on rank ``cp_rank``.

    Example, P = 2, rank 0, documents [8, 4]: query chunks (lengths) ``[2, 2, 1, 1]`` attend to key prefixes of
    ``[2, 8, 1, 4]`` tokens (chunk 0 = positions 0-1 sees 0-1; chunk 3 = positions 6-7 sees 0-7).
    """
    check_divisible(doc_lengths, cp_size)
    docs = [n for n in doc_lengths if n > 0]
    per_rank = [local_token_index(docs, cp_size, q) for q in range(cp_size)]
    local = sum(docs) // cp_size
    # Global token g sits at row inverse[g] of the all-gathered tensor (rank-major, then local order).
    inverse = torch.empty(sum(docs), dtype=torch.int64)
    inverse[torch.cat(per_rank)] = torch.arange(sum(docs))
    starts = torch.tensor([0] + docs[:-1]).cumsum(0).tolist()
    q_lengths, k_lengths, key_parts, pos_parts = [], [], [], []
    for start, n in zip(starts, docs):
        c = n // (2 * cp_size)
        for j in (cp_rank, 2 * cp_size - 1 - cp_rank):
            q_lengths.append(c)
            k_lengths.append((j + 1) * c)
            key_parts.append(inverse[start : start + (j + 1) * c])
            pos_parts.append(torch.arange(j * c, (j + 1) * c))

    def cumulative(lengths: list[int]) -> torch.Tensor:
        return torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0).to(device=device, dtype=torch.int32)

    empty = torch.zeros(0, dtype=torch.int64)
    return CPLayout(
        cp_size=cp_size,
        local_tokens=local,
        positions=(torch.cat(pos_parts) if pos_parts else empty).to(device),
        key_index=(torch.cat(key_parts) if key_parts else empty).to(device),
        cu_q=cumulative(q_lengths),
        cu_k=cumulative(k_lengths),
        max_q=max(q_lengths, default=0),
        max_k=max(k_lengths, default=0),
        q_lengths=tuple(q_lengths),
        k_lengths=tuple(k_lengths),
    )


class _GatherFirstDim(torch.autograd.Function):
    """All-gather along dim 0 over ``group``; backward reduce-scatters (sums) the gradient back to each rank."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        size = torch.distributed.get_world_size(group)
        tensor = tensor.contiguous()
        out = tensor.new_empty((size * tensor.shape[0], *tensor.shape[1:]))
        torch.distributed.all_gather_into_tensor(out, tensor, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        size = torch.distributed.get_world_size(ctx.group)
        grad = grad.contiguous()
        out = grad.new_empty((grad.shape[0] // size, *grad.shape[1:]))
        torch.distributed.reduce_scatter_tensor(out, grad, group=ctx.group)
        return out, None


def gather_first_dim(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Autograd-aware all-gather of ``tensor`` along dim 0 (rank-major) over ``group``."""
    return _GatherFirstDim.apply(tensor, group)


def expand_keys(gathered: torch.Tensor, layout: CPLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query chunk's key prefix, in global order, from all-gathered ``[P*t, 2, hk, d]`` (K and V stacked on
    dim 1, rank-major as :func:`gather_first_dim` returns them). Returns ``(keys, values)`` ``[total_k, hk, d]``."""
    return gathered[:, 0].index_select(0, layout.key_index), gathered[:, 1].index_select(0, layout.key_index)


def gather_keys(key: torch.Tensor, value: torch.Tensor, layout: CPLayout, group: Any) -> tuple[torch.Tensor, ...]:
    """Expanded keys/values ``[total_k, hk, d]`` of the whole CP group (one all-gather of K and V together)."""
    return expand_keys(gather_first_dim(torch.stack((key, value), dim=1), group), layout)


def prefix_mask(q_len: int, k_len: int, left: int | None, device: torch.device) -> torch.Tensor:
    """Boolean ``[q_len, k_len]``, True = may attend: query ``i`` is key position ``k_len - q_len + i``.

    >>> prefix_mask(2, 4, None, torch.device("cpu")).int().tolist()
    [[1, 1, 1, 0], [1, 1, 1, 1]]
    """
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    dist = q_pos[:, None] - torch.arange(k_len, device=device)[None, :]
    mask = dist >= 0
    return mask if left is None else mask & (dist <= left)


def chunked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: CPLayout,
    *,
    scale: float,
    left: int | None,
    dropout_p: float,
) -> torch.Tensor:
    """Reference path (CPU, fp32, dropout): one SDPA call per local query chunk with an explicit prefix mask.

    ``query [t, h, d]`` local; ``key/value [total_k, hk, d]`` from :func:`gather_keys`. Returns ``[t, h, d]``.
    """
    outs = []
    q_split, k_split = list(layout.q_lengths), list(layout.k_lengths)
    chunks = zip(query.split(q_split), key.split(k_split), value.split(k_split))
    for q, k, v in chunks:
        if q.shape[0] == 0:
            continue
        mask = prefix_mask(q.shape[0], k.shape[0], left, query.device)
        q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))  # [n, h, d] -> [1, h, n, d]
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
        outs.append(o.squeeze(0).transpose(0, 1))
    return torch.cat(outs, dim=0) if outs else query.new_zeros(query.shape)
