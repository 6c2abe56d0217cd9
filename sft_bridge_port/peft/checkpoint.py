"""Adapter-only checkpoints and the training hook: what the trainer calls when ``cfg.peft`` is set.

Flow (Bridge's): build the model, load the *base* weights from ``checkpoint.pretrained_checkpoint``, attach
the adapters (base frozen), then wrap in DDP; the optimizer sees only adapter parameters, and checkpoints
hold only the adapters (plus optimizer/scheduler/RNG state)::

    hook = functools.partial(apply_peft_for_training, cfg.peft,
                             pretrained_checkpoint=cfg.checkpoint.pretrained_checkpoint)
    model = provider.provide_distributed_model(ddp_config, pre_wrap_hook=hook, ...)
    sd = adapter_sharded_state_dict(model)            # instead of dist_ckpt.model_sharded_state_dict(model)
    sd["optimizer"] = optimizer.sharded_state_dict(dict(sd), ...)

Keys are the usual ones (``"model"``, or ``"model0".."modelN"`` with virtual pipeline stages) holding only
``*.adapter.*`` tensors, so an adapter checkpoint reshards across TP/PP like any torch_dist checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from sft_bridge_port.peft.base import adapter_key_filter
from sft_bridge_port.utils import ckpt_layout
from sft_bridge_port.utils.dist_ckpt import model_state_key, save_sharded, unwrap


def adapter_state_filter(state: dict[str, Any]) -> dict[str, Any]:
    """Keep the adapter entries of a (sharded or plain) model state dict.

    Example: ``{"...linear_qkv.weight": W, "...linear_qkv.adapter.linear_in.weight": A}`` -> ``{"...adapter...": A}``.
    """
    return {k: v for k, v in state.items() if adapter_key_filter(k)}


def adapter_sharded_state_dict(model_chunks: Sequence[torch.nn.Module]) -> dict[str, Any]:
    """``{"model": {adapter sharded tensors}}`` (``model0..N`` with VPP) for dist_checkpointing save/load.

    Raises:
        ValueError: the model carries no adapter (PEFT was not applied).
    """
    n = len(model_chunks)
    out = {model_state_key(i, n): adapter_state_filter(unwrap(m).sharded_state_dict()) for i, m in enumerate(model_chunks)}
    if not any(out.values()):
        raise ValueError("the model has no adapter parameters: apply the PEFT config (cfg.peft) before saving adapters")
    return out


def save_adapter_weights(model_chunks: Sequence[torch.nn.Module], iter_dir: str | os.PathLike) -> None:
    """Write only the adapter weights as a torch_dist checkpoint in ``iter_dir`` (all ranks call this)."""
    Path(iter_dir).mkdir(parents=True, exist_ok=True)
    save_sharded(adapter_sharded_state_dict(model_chunks), iter_dir)


def load_adapter_weights(model_chunks: Sequence[torch.nn.Module], checkpoint: str | os.PathLike) -> Path:
    """Load adapter weights (from an adapter-only or a full checkpoint, any TP/PP) into an adapted model.

    Args:
        model_chunks: the model with the same PEFT config applied.
        checkpoint: a checkpoint root (its tracker picks the iteration) or an ``iter_*`` folder.

    Returns:
        The iteration folder read.

    Raises:
        RuntimeError: the checkpoint lacks an adapter the model has (names the folder and the keys).
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    sharded = adapter_sharded_state_dict(model_chunks)
    iter_dir, _ = ckpt_layout.resolve_checkpoint(checkpoint)
    try:
        loaded = dist_checkpointing.load(sharded, str(iter_dir), strict=StrictHandling.ASSUME_OK_UNEXPECTED)
    except Exception as exc:  # dist_checkpointing's message omits the folder
        raise RuntimeError(f"could not load adapter weights from {iter_dir}: {exc}") from exc
    for i, chunk in enumerate(model_chunks):
        state = loaded[model_state_key(i, len(model_chunks))]
        missing, unexpected = unwrap(chunk).load_state_dict(state, strict=False)
        absent = [k for k in adapter_state_filter(dict.fromkeys(missing))]
        if absent or unexpected:
            raise RuntimeError(f"{iter_dir}: adapter weights do not fit the model: missing {absent[:5]}, unexpected {unexpected[:5]}")
    return iter_dir


def apply_peft_for_training(
    peft: Any, model_chunks: list[torch.nn.Module], pretrained_checkpoint: str | os.PathLike | None = None
) -> list[torch.nn.Module]:
    """``pre_wrap_hook`` for PEFT: load base weights (if given), attach adapters, freeze the base.

    Use with ``functools.partial(apply_peft_for_training, cfg.peft, pretrained_checkpoint=...)``. Loading
    comes first because DoRA's magnitude starts at the base weight's row norms.

    Raises:
        ValueError: ``peft`` is None (nothing to apply).
    """
    from sft_bridge_port.utils.dist_ckpt import load_model_weights

    if peft is None:
        raise ValueError("apply_peft_for_training needs a PEFT config (cfg.peft is None)")
    if pretrained_checkpoint is not None:
        iter_dir, _ = ckpt_layout.resolve_checkpoint(pretrained_checkpoint)
        load_model_weights(model_chunks, iter_dir, strict=True)
    return peft(model_chunks, training=True)


def trainable_parameters(model_chunks: Sequence[torch.nn.Module]) -> list[torch.nn.Parameter]:
    """The parameters an optimizer should see after PEFT (the adapters)."""
    return [p for c in model_chunks for p in unwrap(c).parameters() if p.requires_grad]
