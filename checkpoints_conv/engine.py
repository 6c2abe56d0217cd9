"""The one conversion engine: applies any ``Table`` in either direction, one parameter at a time.

The engine knows four row kinds (see ``mapping.Row``) and the TP split of each; it never knows a model family.
Import calls :func:`hf_to_mcore` per megatron parameter, export calls :func:`mcore_to_hf`; both work on full
(unsharded) tensors and :func:`shard` / :func:`unshard` move between full tensors and a TP rank's slice.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from checkpoints_conv import transforms as T
from checkpoints_conv.mapping import ModelShape, Row, Table


def active_rows(table: Table, shape: ModelShape) -> list[Row]:
    """Rows that exist for this model (e.g. ``output_layer`` only when untied, QK-norm only for Qwen3)."""
    return [r for r in table.rows if r.when is None or getattr(shape, r.when)]


def plan(table: Table, shape: ModelShape, layers: range | None = None) -> Iterator[tuple[Row, int | None]]:
    """Every (row, global layer) pair of the model, in HF file order: embedding, layers, final norm, head.

    ``layers`` restricts the per-layer rows (a pipeline stage); global rows are always yielded and the caller
    drops the ones its stage does not hold.
    """
    rows = active_rows(table, shape)
    layers = range(shape.num_layers) if layers is None else layers
    head_rows = [r for r in rows if not r.per_layer and r.mcore.startswith("embedding.")]
    tail_rows = [r for r in rows if not r.per_layer and r not in head_rows]
    for r in head_rows:
        yield r, None
    for layer in layers:
        for r in rows:
            if r.per_layer:
                yield r, layer
    for r in tail_rows:
        yield r, None


def mcore_shape(row: Row, shape: ModelShape) -> tuple[int, ...]:
    """Full (unsharded, vocab-padded) megatron shape of a row, e.g. ``(qkv_rows, hidden_size)``."""
    return tuple(int(getattr(shape, d)) for d in row.dims)


def expected_hf_shapes(row: Row, shape: ModelShape) -> list[tuple[int, ...]]:
    """HF tensor shapes a row expects, derived by running the export transform on a meta tensor."""
    meta = torch.empty(mcore_shape(row, shape), device="meta")
    return [tuple(t.shape) for t in mcore_to_hf(row, shape, meta)]


def hf_to_mcore(row: Row, shape: ModelShape, hf: list[torch.Tensor]) -> torch.Tensor:
    """Full megatron tensor from the row's HF tensors (already shape-checked by :func:`read_hf_row`)."""
    if row.kind == "qkv":
        return T.interleave_qkv(*hf, shape.num_heads, shape.num_groups, shape.head_dim)
    if row.kind == "gate_up":
        return T.merge_gate_up(*hf)
    if row.kind == "vocab":
        return T.pad_vocab(hf[0], shape.padded_vocab_size)
    return hf[0]


def mcore_to_hf(row: Row, shape: ModelShape, t: torch.Tensor) -> list[torch.Tensor]:
    """HF tensors (in ``row.hf`` order) from a full megatron tensor; inverse of :func:`hf_to_mcore`."""
    if row.kind == "qkv":
        return list(T.split_qkv(t, shape.num_heads, shape.num_groups, shape.head_dim))
    if row.kind == "gate_up":
        return list(T.split_gate_up(t))
    if row.kind == "vocab":
        return [T.unpad_vocab(t, shape.vocab_size)]
    return [t]


def shard(row: Row, t: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """The TP slice of a full megatron tensor held by ``rank`` (gate and up split separately)."""
    if row.kind == "gate_up" and size > 1:
        return T.tp_shard_gate_up(t, rank, size)
    return T.tp_shard(t, row.tp_axis, rank, size)


def unshard(row: Row, shards: list[torch.Tensor]) -> torch.Tensor:
    """Full megatron tensor from every TP rank's slice; inverse of :func:`shard`."""
    if row.kind == "gate_up" and len(shards) > 1:
        return T.tp_unshard_gate_up(shards)
    return T.tp_unshard(shards, row.tp_axis)


HFReader = Callable[[str], torch.Tensor]


def read_hf_row(row: Row, shape: ModelShape, layer: int | None, read: HFReader, where: Callable[[str], str]) -> list[torch.Tensor]:
    """Read a row's HF tensors and check their shapes.

    Raises:
        ValueError: a tensor's shape differs from what the config implies; names the tensor, its file
            (``where(name)``), and both shapes.
    """
    out = []
    for name, want in zip(row.hf_names(layer), expected_hf_shapes(row, shape)):
        t = read(name)
        if tuple(t.shape) != want:
            raise ValueError(
                f"tensor {name} in {where(name)} has shape {tuple(t.shape)} but config.json implies {want} "
                f"(hidden {shape.hidden_size}, heads {shape.num_heads}, kv groups {shape.num_groups}, head dim "
                f"{shape.head_dim}, ffn {shape.ffn_hidden_size}, vocab {shape.vocab_size}). The weights and "
                f"config.json do not belong together."
            )
        out.append(t)
    return out


def check_tp_divides(shape: ModelShape, tp: int) -> None:
    """Raise a ValueError naming every quantity that ``tp`` does not divide."""
    checks = {
        "num_attention_heads": shape.num_heads,
        "num_query_groups (KV heads)": shape.num_groups,
        "ffn_hidden_size": shape.ffn_hidden_size,
        "padded vocab size": shape.padded_vocab_size,
    }
    bad = [f"{k}={v}" for k, v in checks.items() if v % tp]
    if bad:
        raise ValueError(
            f"tensor parallel size {tp} does not divide {', '.join(bad)}; choose a TP size that divides "
            f"all of them (for the vocab, raise make_vocab_size_divisible_by)."
        )


def check_pp_divides(shape: ModelShape, pp: int) -> None:
    """Raise a ValueError when ``pp`` pipeline stages cannot hold the layers evenly."""
    if pp < 1 or shape.num_layers % pp:
        raise ValueError(
            f"pipeline parallel size {pp} does not divide num_layers={shape.num_layers}; choose a divisor."
        )
