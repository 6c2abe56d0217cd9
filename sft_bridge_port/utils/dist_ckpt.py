"""Model weights in and out of megatron-core distributed checkpoints (torch_dist), for training and conversion.

Keys follow Megatron-LM/Bridge: the model's sharded state dict sits under ``"model"``, or ``"model0"``,
``"model1"``, ... with virtual pipeline stages. Because torch_dist stores global tensors with their shard offsets,
a checkpoint written at one TP/PP layout loads at any other: each rank asks only for its own shards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP / Float16Module wrappers (anything exposing ``.module``) down to the megatron model."""
    while hasattr(module, "module") and isinstance(module.module, torch.nn.Module):
        module = module.module
    return module


def model_state_key(index: int, num_chunks: int) -> str:
    """``"model"`` for a single chunk, ``"model{index}"`` with virtual pipeline stages (Megatron-LM's keys)."""
    return "model" if num_chunks == 1 else f"model{index}"


def model_sharded_state_dict(model_chunks: Sequence[torch.nn.Module]) -> dict[str, Any]:
    """``{"model": chunk.sharded_state_dict()}`` (or ``model0..N``) for the unwrapped chunks."""
    n = len(model_chunks)
    return {model_state_key(i, n): unwrap(m).sharded_state_dict() for i, m in enumerate(model_chunks)}


def save_sharded(sharded_state_dict: dict[str, Any], iter_dir: str | os.PathLike, fully_parallel: bool = False) -> None:
    """``dist_checkpointing.save`` into an existing, empty ``iter_dir`` (all ranks call it)."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy

    strategy = get_default_save_sharded_strategy()
    if fully_parallel and torch.distributed.get_world_size() > 1:
        from megatron.core import parallel_state
        from megatron.core.dist_checkpointing.strategies.fully_parallel import FullyParallelSaveStrategyWrapper

        strategy = FullyParallelSaveStrategyWrapper(
            strategy, parallel_state.get_data_parallel_group(with_context_parallel=True)
        )
    dist_checkpointing.save(sharded_state_dict, str(iter_dir), sharded_strategy=strategy)


def save_model_weights(model_chunks: Sequence[torch.nn.Module], iter_dir: str | os.PathLike) -> None:
    """Write only the model weights of ``model_chunks`` as a torch_dist checkpoint in ``iter_dir``."""
    Path(iter_dir).mkdir(parents=True, exist_ok=True)
    save_sharded(model_sharded_state_dict(model_chunks), iter_dir)


def load_model_weights(
    model_chunks: Sequence[torch.nn.Module], iter_dir: str | os.PathLike, strict: bool = True
) -> None:
    """Load weights saved by :func:`save_model_weights` (or by training) into ``model_chunks``, any TP/PP.

    Extra tensors in the checkpoint (an optimizer state, say) are ignored. With ``strict`` a weight the model
    has but the checkpoint lacks is an error naming it.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    sharded = model_sharded_state_dict(model_chunks)
    try:
        loaded = dist_checkpointing.load(sharded, str(iter_dir), strict=StrictHandling.ASSUME_OK_UNEXPECTED)
    except Exception as exc:  # re-raised with the folder named: dist_checkpointing's messages omit it
        raise RuntimeError(f"could not load model weights from {iter_dir}: {exc}") from exc
    for i, chunk in enumerate(model_chunks):
        key = model_state_key(i, len(model_chunks))
        missing, _ = unwrap(chunk).load_state_dict(loaded[key], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if strict and missing:
            raise RuntimeError(f"{iter_dir}: checkpoint lacks weights the model needs: {missing[:10]}")
