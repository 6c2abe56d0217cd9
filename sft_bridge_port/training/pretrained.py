"""Find the starting weights named by ``checkpoint.pretrained_checkpoint``.

It may be a Megatron checkpoint root, an ``iter_*`` folder, or (unlike Bridge, where users hit issue #719) a
Hugging Face model folder: that is converted once with ``checkpoints_conv.import_hf_to_megatron`` into
``<run dir>/pretrained_from_hf/<folder name>/`` and reused by later runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from sft_bridge_port.utils import ckpt_layout

logger = logging.getLogger(__name__)

HF_IMPORT_DIR = "pretrained_from_hf"


def _decide_on_rank0(value: bool) -> bool:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])
    return value


def hf_import_cache(cfg: Any, hf_path: Path) -> Path:
    """Where an HF ``pretrained_checkpoint`` is converted to: next to the run's checkpoints."""
    base = Path(cfg.checkpoint.save).resolve().parent if cfg.checkpoint.save else Path.cwd()
    return base / HF_IMPORT_DIR / hf_path.resolve().name


def resolve_pretrained(cfg: Any) -> Path | None:
    """The ``iter_*`` folder to load starting weights from, or None when no ``pretrained_checkpoint`` is set.

    Must run after the process group exists and before megatron parallel state does: the HF import is a
    collective that builds its own parallel state (every rank calls this).

    Raises:
        CheckpointNotFoundError: the path is neither a Megatron checkpoint nor an HF model folder.
    """
    path = cfg.checkpoint.pretrained_checkpoint
    if path is None:
        return None
    p = Path(path)
    if p.exists() and not ckpt_layout.is_megatron_checkpoint(p) and ckpt_layout.is_hf_folder(p):
        cache = hf_import_cache(cfg, p)
        need_import = _decide_on_rank0(not ckpt_layout.is_megatron_checkpoint(cache))
        if need_import:
            from checkpoints_conv import import_hf_to_megatron

            logger.info("checkpoint.pretrained_checkpoint %s is a Hugging Face folder: importing into %s", p, cache)
            import_hf_to_megatron(str(p), str(cache))
        p = cache
    try:
        iter_dir, _ = ckpt_layout.resolve_checkpoint(p)
    except ckpt_layout.CheckpointNotFoundError as exc:
        raise ckpt_layout.CheckpointNotFoundError(f"checkpoint.pretrained_checkpoint: {exc}") from exc
    return iter_dir
