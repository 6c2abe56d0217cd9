"""Whole-state-dict conversions built from the engine's per-row functions (no megatron-core needed).

These are the reference semantics of a parallel layout: ``shard_state`` produces, for every (pp, tp) rank,
exactly the local tensors megatron-core holds there (layers renumbered from 0 on each pipeline stage,
embedding on the first stage, final norm and output layer on the last), and ``unshard_state`` inverts it.
Import/export of real checkpoints go through dist_checkpointing instead, which reshards by itself.
"""

from __future__ import annotations

from typing import Iterator

import torch

from checkpoints_conv import engine
from checkpoints_conv.hf_io import SafetensorsReader
from checkpoints_conv.mapping import ModelShape, Table


def hf_to_mcore_state(table: Table, shape: ModelShape, reader: SafetensorsReader) -> dict[str, torch.Tensor]:
    """Full (TP=1, PP=1) megatron state dict from an HF folder; checks names, shapes and leftovers."""
    out = {}
    for row, layer in engine.plan(table, shape):
        hf = engine.read_hf_row(row, shape, layer, reader.get, reader.file_of)
        out[row.mcore_name(layer)] = engine.hf_to_mcore(row, shape, hf)
    check_no_leftovers(table, shape, reader)
    return out


def expected_hf_names(table: Table, shape: ModelShape) -> set[str]:
    """Every HF tensor name the table consumes for this model."""
    return {n for row, layer in engine.plan(table, shape) for n in row.hf_names(layer)}


def check_no_leftovers(table: Table, shape: ModelShape, reader: SafetensorsReader) -> None:
    """Raise ValueError for HF tensors the table does not map (an unknown weight would be silently lost).

    A tied model's ``lm_head.weight`` (some checkpoints store the duplicate) and ignored buffers are allowed.
    """
    allowed = expected_hf_names(table, shape)
    extra = sorted(
        n for n in reader.names - allowed
        if not table.is_ignored(n) and not (shape.tied and n == "lm_head.weight")
    )
    if extra:
        raise ValueError(
            f"{len(extra)} tensor(s) in {reader.folder} are not part of a {table.name} model with this config: "
            f"{', '.join(f'{n} ({reader.file_of(n)})' for n in extra[:8])}. The checkpoint belongs to a different "
            f"architecture or config.json is wrong."
        )


def mcore_to_hf_state(table: Table, shape: ModelShape, mcore: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) pairs from a full megatron state dict, in HF file order."""
    for row, layer in engine.plan(table, shape):
        yield from zip(row.hf_names(layer), engine.mcore_to_hf(row, shape, mcore[row.mcore_name(layer)]))


def stage_layers(num_layers: int, pp_rank: int, pp_size: int) -> range:
    """Global layers held by a pipeline stage (even split): 8 layers, PP 2 -> stage 1 holds 4..7."""
    per = num_layers // pp_size
    return range(pp_rank * per, (pp_rank + 1) * per)


def _local_name(name: str, layer: int | None, first: int) -> str:
    return name if layer is None else name.replace(f"decoder.layers.{layer}.", f"decoder.layers.{layer - first}.", 1)


def shard_state(
    table: Table, shape: ModelShape, full: dict[str, torch.Tensor], tp: int, pp: int
) -> dict[tuple[int, int], dict[str, torch.Tensor]]:
    """Split a full state dict into megatron's per-rank local state dicts, keyed ``(pp_rank, tp_rank)``.

    With tied embeddings and PP > 1 the last stage also holds ``output_layer.weight`` (megatron's copy of the
    embedding for the logits), which :func:`unshard_state` drops again.
    """
    engine.check_tp_divides(shape, tp)
    engine.check_pp_divides(shape, pp)
    out = {}
    for p in range(pp):
        layers = stage_layers(shape.num_layers, p, pp)
        for t in range(tp):
            local = {}
            for row, layer in engine.plan(table, shape, layers):
                if not _on_stage(row.mcore, p, pp):
                    continue
                local[_local_name(row.mcore_name(layer), layer, layers.start)] = engine.shard(row, full[row.mcore_name(layer)], t, tp)
            if shape.tied and pp > 1 and p == pp - 1:
                emb = next(r for r in table.rows if r.mcore.startswith("embedding."))
                local["output_layer.weight"] = engine.shard(emb, full[emb.mcore], t, tp)
            out[(p, t)] = local
    return out


def _on_stage(mcore_name: str, p: int, pp: int) -> bool:
    if mcore_name.startswith("embedding."):
        return p == 0
    if mcore_name.startswith(("decoder.final_layernorm", "output_layer")):
        return p == pp - 1
    return True


def unshard_state(
    table: Table, shape: ModelShape, shards: dict[tuple[int, int], dict[str, torch.Tensor]], tp: int, pp: int
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`shard_state`: gather every rank's local tensors back into the full state dict."""
    full = {}
    for p in range(pp):
        layers = stage_layers(shape.num_layers, p, pp)
        for row, layer in engine.plan(table, shape, layers):
            if not _on_stage(row.mcore, p, pp):
                continue
            local = _local_name(row.mcore_name(layer), layer, layers.start)
            full[row.mcore_name(layer)] = engine.unshard(row, [shards[(p, t)][local] for t in range(tp)])
    return full
