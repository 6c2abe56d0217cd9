"""Pure tensor transforms between Hugging Face and megatron-core layouts.

Every function takes tensors and plain integers, returns tensors, touches no global state, and checks that
the number of elements is conserved (an internal invariant, hence ``assert``: user-facing shape checks
happen earlier, in the engine, with a ``ValueError`` that names the tensor). Each pair is a bijection:
``split_qkv(interleave_qkv(q, k, v)) == (q, k, v)`` bit for bit, and the tests check it.
"""

from __future__ import annotations

import torch


def _conserved(inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
    n_in, n_out = sum(t.numel() for t in inputs), sum(t.numel() for t in outputs)
    assert n_in == n_out, f"transform changed the element count: {n_in} -> {n_out}"


def interleave_qkv(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, num_groups: int, head_dim: int
) -> torch.Tensor:
    """Fuse HF ``q_proj``/``k_proj``/``v_proj`` into megatron-core's ``linear_qkv``, grouped by query group.

    Works for weights ``[rows, hidden]`` and biases ``[rows]`` alike. Megatron lays the fused tensor out as,
    for each KV group g: the query heads of g, then k_g, then v_g, so a column-parallel split over TP ranks
    hands every rank whole groups.

    Example (2 heads, 1 group, head_dim 1; rows shown by name)::

        q = [q0, q1], k = [k0], v = [v0]   ->   [q0, q1, k0, v0]
        4 heads, 2 groups:  q = [q0..q3], k = [k0, k1], v = [v0, v1]
                        ->  [q0, q1, k0, v0, q2, q3, k1, v1]

    Args:
        q: ``[num_heads * head_dim, *rest]``.
        k, v: ``[num_groups * head_dim, *rest]``.
        num_heads, num_groups, head_dim: attention geometry (num_heads % num_groups == 0).

    Returns:
        ``[(num_heads + 2 * num_groups) * head_dim, *rest]``.
    """
    rest = q.shape[1:]
    heads_per_group = num_heads // num_groups
    q_g = q.reshape(num_groups, heads_per_group * head_dim, *rest)  # [G, hpg*hd, *rest]
    k_g = k.reshape(num_groups, head_dim, *rest)  # [G, hd, *rest]
    v_g = v.reshape(num_groups, head_dim, *rest)  # [G, hd, *rest]
    out = torch.cat([q_g, k_g, v_g], dim=1).reshape(-1, *rest)  # [G*(hpg+2)*hd, *rest]
    _conserved([q, k, v], [out])
    return out


def split_qkv(
    qkv: torch.Tensor, num_heads: int, num_groups: int, head_dim: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave_qkv`: ``[q0, q1, k0, v0, ...] -> (q, k, v)`` (contiguous copies)."""
    rest = qkv.shape[1:]
    heads_per_group = num_heads // num_groups
    per_group = (heads_per_group + 2) * head_dim
    grouped = qkv.reshape(num_groups, per_group, *rest)  # [G, (hpg+2)*hd, *rest]
    q, k, v = torch.split(grouped, [heads_per_group * head_dim, head_dim, head_dim], dim=1)
    q = q.reshape(num_heads * head_dim, *rest).contiguous()
    k = k.reshape(num_groups * head_dim, *rest).contiguous()
    v = v.reshape(num_groups * head_dim, *rest).contiguous()
    _conserved([qkv], [q, k, v])
    return q, k, v


def merge_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """HF ``gate_proj`` and ``up_proj`` ``[ffn, hidden]`` each -> megatron ``linear_fc1`` ``[2*ffn, hidden]`` = [gate; up]."""
    out = torch.cat([gate, up], dim=0)
    _conserved([gate, up], [out])
    return out


def split_gate_up(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`merge_gate_up`: ``[gate; up] -> (gate, up)`` (contiguous copies)."""
    gate, up = (t.contiguous() for t in torch.chunk(fc1, 2, dim=0))
    _conserved([fc1], [gate, up])
    return gate, up


def pad_vocab(t: torch.Tensor, padded_rows: int) -> torch.Tensor:
    """Append zero rows so dim 0 has ``padded_rows`` (embedding / output layer vocab padding).

    Example: a ``[5, h]`` embedding padded to 8 rows -> rows 5..7 are zeros; ``unpad_vocab(.., 5)`` undoes it.
    """
    extra = padded_rows - t.shape[0]
    assert extra >= 0, f"cannot pad {t.shape[0]} rows down to {padded_rows}"
    if extra == 0:
        return t
    out = torch.cat([t, t.new_zeros((extra, *t.shape[1:]))], dim=0)
    assert out.numel() == t.numel() + extra * t[0].numel()
    return out


def unpad_vocab(t: torch.Tensor, vocab_rows: int) -> torch.Tensor:
    """Keep the first ``vocab_rows`` rows (strips the padding :func:`pad_vocab` added)."""
    assert t.shape[0] >= vocab_rows, f"tensor has {t.shape[0]} rows, fewer than the vocab {vocab_rows}"
    return t[:vocab_rows].contiguous()


def tp_shard(t: torch.Tensor, axis: int | None, rank: int, size: int) -> torch.Tensor:
    """The slice of ``t`` that tensor-parallel ``rank`` of ``size`` holds.

    ``axis`` 0 = column-parallel (qkv, fc1, embedding, output layer), 1 = row-parallel (proj, fc2),
    None = replicated (norms). Example: ``[8, 4]`` at axis 0, size 2 -> rank 1 holds rows 4..7.
    """
    if axis is None or size == 1:
        return t
    assert t.shape[axis] % size == 0, f"dim {axis} of {tuple(t.shape)} does not split over {size} ranks"
    return torch.chunk(t, size, dim=axis)[rank].contiguous()


def tp_unshard(shards: list[torch.Tensor], axis: int | None) -> torch.Tensor:
    """Inverse of :func:`tp_shard` over all ranks (replicated tensors: rank 0's copy)."""
    if axis is None or len(shards) == 1:
        return shards[0]
    out = torch.cat(shards, dim=axis)
    _conserved(shards, [out])
    return out


def tp_shard_gate_up(fc1: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """TP slice of a fused ``[gate; up]``: gate and up are split *separately*, rank r holds ``[gate_r; up_r]``.

    Example (ffn 4, TP 2): ``[g0 g1 g2 g3 u0 u1 u2 u3]`` -> rank 0 ``[g0 g1 u0 u1]``, rank 1 ``[g2 g3 u2 u3]``.
    """
    gate, up = torch.chunk(fc1, 2, dim=0)
    return torch.cat([tp_shard(gate, 0, rank, size), tp_shard(up, 0, rank, size)], dim=0)


def tp_unshard_gate_up(shards: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`tp_shard_gate_up`: ``[[g_r; u_r] per rank] -> [gate; up]``."""
    halves = [torch.chunk(s, 2, dim=0) for s in shards]
    out = torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    _conserved(shards, [out])
    return out
