"""Fold adapters into the base weights: a plain megatron model / checkpoint that conversion exports to HF.

Each adapted layer's weight becomes the adapter's ``merged_weight`` (computed in fp32, cast back to the
weight's dtype once), the adapter and its hook are removed, and parameter names are the plain model's::

    LoRA:  W <- W + (alpha / dim) * B @ A
    DoRA:  W <- (m / ||W + s B A||_row) * (W + s B A)

Merging is local to each TP rank (column: ``W_r += s B_r A``; row: ``W_r += s B A_r``), so it runs at any
TP/PP layout; a row-parallel DoRA layer all-reduces its squared row norms.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml

from sft_bridge_port.peft import adapters
from sft_bridge_port.peft.base import iter_adapted
from sft_bridge_port.peft.checkpoint import load_adapter_weights
from sft_bridge_port.utils import ckpt_layout
from sft_bridge_port.utils.dist_ckpt import load_model_weights, save_model_weights


@torch.no_grad()
def merge_adapters(model_chunks: Sequence[torch.nn.Module]) -> Sequence[torch.nn.Module]:
    """Merge every adapter of ``model_chunks`` into its base weight, in place; returns ``model_chunks``.

    Raises:
        ValueError: the model carries no adapter.
    """
    layers = list(iter_adapted(model_chunks))
    if not layers:
        raise ValueError("merge_adapters: the model carries no adapter (apply the PEFT config first)")
    for _, base in layers:
        merged = base.adapter.merged_weight(base)  # fp32
        base.weight.copy_(merged.to(base.weight.dtype))
        adapters.detach(base)
    return model_chunks


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _copy_extras(src_iter: Path, dst_iter: Path) -> None:
    """Copy the tokenizer and ``run_config.yaml`` (with ``peft: null``: the merged model has no adapters)."""
    tok = src_iter / ckpt_layout.TOKENIZER_DIR
    if tok.is_dir():
        shutil.copytree(tok, dst_iter / ckpt_layout.TOKENIZER_DIR, dirs_exist_ok=True)
    cfg_file = src_iter / ckpt_layout.CONFIG_FILE
    if cfg_file.is_file():
        cfg = yaml.safe_load(cfg_file.read_text())
        if isinstance(cfg, dict):
            cfg["peft"] = None
        ckpt_layout.write_text_atomic(dst_iter / ckpt_layout.CONFIG_FILE, yaml.safe_dump(cfg, sort_keys=False))


def merge_adapter_checkpoint(
    build_model: Callable[[], list[torch.nn.Module]],
    peft: Any,
    base_checkpoint: str | os.PathLike | None,
    adapter_checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
) -> Path:
    """Base checkpoint + adapter checkpoint -> a plain Megatron checkpoint (``ckpt_layout`` format).

    Runs in the caller's parallel context (e.g. ``parallel_context()``: a world of one on CPU); all ranks call it.

    Args:
        build_model: returns fresh, unwrapped model chunks of the base architecture (e.g. ``provider.provide``).
        peft: the PEFT config the adapters were trained with (``cfg.peft`` of the adapter checkpoint).
        base_checkpoint: the base weights (``checkpoint.pretrained_checkpoint`` of the run), or None when
            ``build_model`` returns chunks that already hold them (e.g. read from an HF folder).
        adapter_checkpoint: a checkpoint root or ``iter_*`` folder written by PEFT training.
        out_dir: checkpoint root to write; gets ``iter_<step>/`` (the adapter checkpoint's step) and the tracker.

    Returns:
        The written iteration folder.
    """
    base_iter = None if base_checkpoint is None else ckpt_layout.resolve_checkpoint(base_checkpoint)[0]
    adapter_iter, step = ckpt_layout.resolve_checkpoint(adapter_checkpoint)
    chunks = build_model()
    if base_iter is not None:
        load_model_weights(chunks, base_iter, strict=True)
    peft(chunks, training=False)
    load_adapter_weights(chunks, adapter_iter)
    merge_adapters(chunks)
    out_iter = Path(out_dir) / ckpt_layout.iter_dir_name(step)
    if out_iter.exists():
        raise FileExistsError(f"{out_iter} already exists; choose an empty output folder")
    _barrier()
    save_model_weights(chunks, out_iter)
    _barrier()
    if _rank() == 0:
        _copy_extras(adapter_iter, out_iter)
        ckpt_layout.write_tracker(out_dir, step)
    _barrier()
    return out_iter
