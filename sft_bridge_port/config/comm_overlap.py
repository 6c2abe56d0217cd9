"""Communication-overlap switches (``cfg.comm_overlap``; Bridge's ``CommOverlapConfig``, the fields SFT uses).

Unset fields (None) leave the model / DDP configs alone. ``tp_comm_overlap`` needs Transformer Engine,
tensor parallelism > 1 and sequence parallelism; when one is missing it is switched off with a warning,
as Bridge does.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Optional

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class CommOverlapConfig:
    """Which communications overlap with compute."""

    tp_comm_overlap: bool = False
    tp_comm_overlap_cfg: Optional[dict[str, Any]] = None
    tp_comm_bootstrap_backend: Optional[str] = None
    overlap_p2p_comm: Optional[bool] = None
    batch_p2p_comm: Optional[bool] = None
    overlap_grad_reduce: Optional[bool] = None
    overlap_param_gather: Optional[bool] = None
    overlap_param_gather_with_optimizer_step: Optional[bool] = None
    align_param_gather: Optional[bool] = None
    bucket_size: Optional[int] = None
    defer_embedding_wgrad_compute: Optional[bool] = None
    wgrad_deferral_limit: Optional[int] = None

    def setup(self, model: Any, optimizer: Any, ddp: Any) -> None:
        """Copy the set switches onto the model / optimizer / DDP configs (idempotent)."""
        tp_overlap = self.tp_comm_overlap
        if tp_overlap:
            reason = None
            if getattr(model, "tensor_model_parallel_size", 1) < 2 or not getattr(model, "sequence_parallel", False):
                reason = "it needs tensor_model_parallel_size > 1 and sequence_parallel=True"
            elif importlib.util.find_spec("transformer_engine") is None:
                reason = "Transformer Engine is not installed"
            if reason:
                logger.warning("comm_overlap.tp_comm_overlap switched off: %s.", reason)
                tp_overlap = False
        _set_if_has(model, "tp_comm_overlap", tp_overlap)
        if tp_overlap and self.tp_comm_overlap_cfg is not None:
            _set_if_has(model, "tp_comm_overlap_cfg", self.tp_comm_overlap_cfg)
        for name in ("overlap_p2p_comm", "batch_p2p_comm", "defer_embedding_wgrad_compute", "wgrad_deferral_limit"):
            _set_if_has(model, name, getattr(self, name))
        for name in ("overlap_grad_reduce", "overlap_param_gather", "align_param_gather", "bucket_size"):
            _set_if_has(ddp, name, getattr(self, name))
        _set_if_has(optimizer, "overlap_param_gather_with_optimizer_step", self.overlap_param_gather_with_optimizer_step)


def _set_if_has(target: Any, name: str, value: Any) -> None:
    if value is not None and target is not None and hasattr(target, name):
        setattr(target, name, value)
