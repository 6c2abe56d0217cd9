"""Moving tensors between a table and a live megatron-core model (any TP rank, any pipeline stage).

:func:`load_rows` fills one model chunk from an HF reader, row by row; :func:`iter_hf_tensors` walks a full
(TP=1) chunk and yields HF tensors. Both check every parameter is accounted for, so a provider/table mismatch
is an error naming the parameter rather than a silently random weight.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator

import torch

from checkpoints_conv import engine
from sft_bridge_port.utils.dist_ckpt import unwrap
from checkpoints_conv.mapping import ModelShape, Table

EXTRA_STATE = "_extra_state"


def chunk_layers(model: torch.nn.Module) -> dict[int, int]:
    """``{global layer index: local index}`` of a model chunk (megatron's ``layer_number`` is 1-based, global)."""
    decoder = getattr(unwrap(model), "decoder", None)
    if decoder is None:
        return {}
    return {layer.layer_number - 1: i for i, layer in enumerate(decoder.layers)}


def _local_name(name: str, layer: int | None, layers: dict[int, int]) -> str:
    if layer is None:
        return name
    return name.replace(f"decoder.layers.{layer}.", f"decoder.layers.{layers[layer]}.", 1)


def build_tp1_model(provider: Any, vocab_rows: int, dtype: torch.dtype) -> torch.nn.Module:
    """An uninitialised single-rank ``GPTModel`` of ``provider``'s architecture with exactly ``vocab_rows``
    embedding rows, on the CPU (the caller has set up a TP=1/PP=1 parallel state).

    The provider is copied; the copy is set to TP=1/PP=1 and no init (weights are overwritten anyway). Its
    ``vocab_size`` stays the true vocab; padding to exactly ``vocab_rows`` (the padded size of the layout the
    checkpoint is for) comes from ``make_vocab_size_divisible_by = vocab_rows``: ceil(V / rows) * rows = rows.
    """
    p = copy.deepcopy(provider)
    p.tensor_model_parallel_size = 1
    p.pipeline_model_parallel_size = 1
    p.virtual_pipeline_model_parallel_size = None
    p.context_parallel_size = 1
    p.sequence_parallel = False
    p.use_cpu_initialization = True
    p.perform_initialization = False
    if vocab_rows < p.vocab_size:
        raise ValueError(f"checkpoint has {vocab_rows} vocab rows, fewer than the provider's vocab_size {p.vocab_size}")
    p.should_pad_vocab = True
    p.make_vocab_size_divisible_by = vocab_rows
    p.params_dtype = dtype
    p.bf16, p.fp16 = dtype == torch.bfloat16, dtype == torch.float16
    return p.provide(pre_process=True, post_process=True)


def load_rows(
    model: torch.nn.Module,
    table: Table,
    shape: ModelShape,
    read: engine.HFReader,
    where: Callable[[str], str],
    tp_rank: int = 0,
    tp_size: int = 1,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> None:
    """Copy HF tensors into every parameter of one model chunk (this TP rank's slices).

    Raises:
        ValueError: an HF tensor is missing or mis-shaped (from the engine), or the model has a parameter
            the table does not fill / a shape the table does not produce (provider and table disagree).
    """
    module = unwrap(model)
    params = dict(module.named_parameters())
    layers = chunk_layers(module)
    filled = set()
    for row, layer in progress(list(engine.plan(table, shape, sorted(layers)))):
        name = _local_name(row.mcore_name(layer), layer, layers)
        if name not in params:
            continue  # embedding / head rows on a stage that does not hold them
        full = engine.hf_to_mcore(row, shape, engine.read_hf_row(row, shape, layer, read, where))
        _copy(params[name], engine.shard(row, full, tp_rank, tp_size), name)
        filled.add(name)
        if shape.tied and "output_layer.weight" in params and row.mcore.startswith("embedding."):
            _copy(params["output_layer.weight"], engine.shard(row, full, tp_rank, tp_size), "output_layer.weight")
            filled.add("output_layer.weight")
        del full
    if shape.tied and "output_layer.weight" in params and "output_layer.weight" not in filled:
        emb = next(r for r in table.rows if r.mcore.startswith("embedding."))
        full = engine.hf_to_mcore(emb, shape, engine.read_hf_row(emb, shape, None, read, where))
        _copy(params["output_layer.weight"], engine.shard(emb, full, tp_rank, tp_size), "output_layer.weight")
        filled.add("output_layer.weight")
    unfilled = sorted(set(params) - filled)
    if unfilled:
        raise ValueError(
            f"the {table.name} table leaves these model parameters unset: {unfilled[:8]}; the provider builds a "
            f"layer the table does not describe (an unsupported config option?)"
        )


def _copy(param: torch.Tensor, value: torch.Tensor, name: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(
            f"model parameter {name} has shape {tuple(param.shape)} but the converted tensor has "
            f"{tuple(value.shape)}: the provider and the HF config disagree"
        )
    with torch.no_grad():
        param.copy_(value)


def iter_hf_tensors(
    model: torch.nn.Module, table: Table, shape: ModelShape, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) for every tensor of a full TP=1/PP=1 model, in HF file order, one row at a time.

    ``dtype`` casts every tensor (HF checkpoints have one dtype; megatron may keep norms in fp32).
    """
    module = unwrap(model)
    state = {k: v for k, v in module.state_dict(keep_vars=True).items() if not k.endswith(EXTRA_STATE)}
    used = set()
    for row, layer in engine.plan(table, shape):
        name = row.mcore_name(layer)
        if name not in state:
            raise ValueError(f"model has no parameter {name} although the {table.name} table needs it")
        used.add(name)
        for hf_name, t in zip(row.hf_names(layer), engine.mcore_to_hf(row, shape, state[name].detach())):
            yield hf_name, t if dtype is None else t.to(dtype)
    left = sorted(k for k in set(state) - used if not (shape.tied and k == "output_layer.weight"))
    if left:
        raise ValueError(f"model tensors not covered by the {table.name} table (they would be lost): {left[:8]}")
