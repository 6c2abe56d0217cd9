"""Mixed-precision settings and Bridge's named presets (``bf16_mixed``, ``fp16_mixed``, FP8 variants), plus ours:
``bf16_pure``.

A preset is applied by :meth:`MixedPrecisionConfig.setup`, which copies every field onto the model,
optimizer and DDP configs that have a field of the same name. That is how Bridge behaves, including the
surprise that ``bf16_mixed`` sets ``ddp.grad_reduce_in_fp32=True`` even when a recipe set it False
(to keep it False, set ``cfg.mixed_precision.grad_reduce_in_fp32 = False`` on the resolved object).

``bf16_pure`` (not in Bridge) trains the way torchtune's ``dtype: bf16``, LLaMA-Factory's ``pure_bf16`` and an HF
model loaded in bf16 do: bf16 weights, gradients and Adam moments, no fp32 master copy. The optimizer then holds
8 bytes per parameter instead of ``bf16_mixed``'s 18 (2 weight + 4 grad + 4 master + 8 moments), and the step skips
the fp32 passes. The price is precision: an update smaller than half a bf16 ulp of its weight (|Δw| < |w|·2^-9)
is lost, and gradients accumulate over micro-batches in bf16. It needs the plain (non-distributed) optimizer:
megatron-core's distributed optimizer always keeps fp32 master shards.

Example:
    >>> cfg = get_mixed_precision_config("bf16_mixed")
    >>> cfg.bf16, cfg.params_dtype, cfg.grad_reduce_in_fp32
    (True, torch.bfloat16, True)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

import torch


@dataclass(kw_only=True)
class MixedPrecisionConfig:
    """Precision of parameters, compute and gradient reduction (Bridge's ``MixedPrecisionConfig`` fields)."""

    fp32: bool = False
    fp16: bool = False
    bf16: bool = False
    params_dtype: Optional[torch.dtype] = None
    pipeline_dtype: Optional[torch.dtype] = None
    autocast_dtype: Optional[torch.dtype] = None
    autocast_enabled: bool = False
    grad_reduce_in_fp32: bool = True
    fp8: Optional[str] = None
    fp8_recipe: str = "tensorwise"
    first_last_layers_bf16: bool = False
    fp8_margin: int = 0
    fp8_amax_history_len: int = 1
    fp8_amax_compute_algo: str = "most_recent"
    fp8_wgrad: bool = True
    fp8_dot_product_attention: bool = False
    fp8_multi_head_attention: bool = False
    fp8_param: Optional[bool] = None
    fp8_param_gather: bool = False
    fp4: Optional[str] = None
    fp4_recipe: str = "nvfp4"
    loss_scale: Optional[float] = None
    initial_loss_scale: Optional[float] = 4294967296
    min_loss_scale: float = 1.0
    loss_scale_window: float = 1000
    hysteresis: int = 2
    num_layers_at_start_in_bf16: int = 0
    num_layers_at_end_in_bf16: int = 0
    reuse_grad_buf_for_mxfp8_param_ag: bool = False
    # --- ours ---
    fp32_master_weights: bool = True
    """False (``bf16_pure``): the optimizer updates the bf16 weights themselves (``optimizer.bf16=False``:
    megatron-core's plain optimizer over bf16 parameters, so its Adam moments are bf16 too); only with ``bf16=True``."""

    def finalize(self) -> None:
        """Check the preset can run here: FP8/FP4 need Transformer Engine, and not both at once."""
        if not self.fp32_master_weights and (not self.bf16 or self.fp16 or self.fp8 or self.fp4):
            raise ValueError(
                "mixed_precision.fp32_master_weights=False is for bf16 training only (bf16=True, no fp16/fp8/fp4); "
                "use the 'bf16_pure' preset"
            )
        if self.fp8_param is None:
            self.fp8_param = self.fp8_param_gather
        if self.fp4 and self.fp8:
            raise ValueError("mixed_precision: fp4 and fp8 cannot be used together; set one of them to None.")
        if (self.fp8 or self.fp4) and importlib.util.find_spec("transformer_engine") is None:
            raise ValueError(
                f"mixed_precision: fp8={self.fp8!r} / fp4={self.fp4!r} needs Transformer Engine, which is not "
                "installed. Install transformer-engine on a GPU machine, or use mixed_precision='bf16_mixed'."
            )

    def setup(self, model_config: Any, optimizer_config: Any = None, ddp_config: Any = None) -> None:
        """Copy every field onto the model / optimizer / DDP configs that have a field of the same name.

        ``params_dtype=None`` is not copied (None is not a valid parameter dtype for megatron-core).
        """
        for target in (model_config, optimizer_config, ddp_config):
            if target is None:
                continue
            for f in fields(self):
                value = getattr(self, f.name)
                if f.name == "params_dtype" and value is None:
                    continue
                if hasattr(target, f.name) and getattr(target, f.name) != value:
                    setattr(target, f.name, value)
        if not self.fp32_master_weights and optimizer_config is not None:
            optimizer_config.bf16 = False  # megatron-core then builds its plain optimizer over the bf16 weights


MIXED_PRECISION_RECIPES: dict[str, Callable[[], MixedPrecisionConfig]] = {}


def _register(func: Callable[[], MixedPrecisionConfig]) -> Callable[[], MixedPrecisionConfig]:
    """Register a preset under its name with ``_`` and with ``-`` (NeMo 2 spelling)."""
    MIXED_PRECISION_RECIPES[func.__name__] = func
    MIXED_PRECISION_RECIPES[func.__name__.replace("_", "-")] = func
    return func


@_register
def bf16_mixed() -> MixedPrecisionConfig:
    """BF16 parameters and compute, fp32 gradient reduction and optimizer master weights."""
    return MixedPrecisionConfig(
        bf16=True, params_dtype=torch.bfloat16, pipeline_dtype=torch.bfloat16, grad_reduce_in_fp32=True
    )


@_register
def bf16_pure() -> MixedPrecisionConfig:
    """BF16 weights, gradients (reduced in bf16) and Adam moments; no fp32 master weights (see the module doc)."""
    cfg = bf16_mixed()
    cfg.grad_reduce_in_fp32, cfg.fp32_master_weights = False, False
    return cfg


@_register
def fp16_mixed() -> MixedPrecisionConfig:
    """FP16 parameters and compute with dynamic loss scaling; gradients reduced in fp16."""
    return MixedPrecisionConfig(
        fp16=True, params_dtype=torch.half, pipeline_dtype=torch.half, grad_reduce_in_fp32=False
    )


@_register
def bf16_with_fp8_delayed_scaling_mixed() -> MixedPrecisionConfig:
    """BF16 with FP8 GEMMs (delayed scaling); needs Transformer Engine."""
    cfg = bf16_mixed()
    cfg.fp8, cfg.fp8_recipe, cfg.fp8_amax_history_len, cfg.fp8_amax_compute_algo = "hybrid", "delayed", 1024, "max"
    cfg.fp8_param_gather = True
    return cfg


@_register
def bf16_with_fp8_current_scaling_mixed() -> MixedPrecisionConfig:
    """BF16 with FP8 per-tensor current scaling, first and last layer kept in BF16; needs Transformer Engine."""
    cfg = bf16_mixed()
    cfg.fp8, cfg.fp8_recipe, cfg.first_last_layers_bf16 = "hybrid", "tensorwise", True
    cfg.num_layers_at_start_in_bf16 = cfg.num_layers_at_end_in_bf16 = 1
    cfg.fp8_param_gather = True
    return cfg


@_register
def bf16_with_mxfp8_mixed() -> MixedPrecisionConfig:
    """BF16 with MXFP8 (Blackwell); needs Transformer Engine."""
    cfg = bf16_mixed()
    cfg.fp8, cfg.fp8_recipe, cfg.fp8_param_gather, cfg.reuse_grad_buf_for_mxfp8_param_ag = "e4m3", "mxfp8", True, True
    return cfg


@_register
def bf16_with_fp8_subchannel_scaling_mixed() -> MixedPrecisionConfig:
    """BF16 with FP8 blockwise (128x128 weights, 1x128 activations) scaling; needs Transformer Engine."""
    cfg = bf16_mixed()
    cfg.fp8, cfg.fp8_recipe, cfg.fp8_param_gather = "hybrid", "blockwise", False
    return cfg


def get_mixed_precision_config(name: str | MixedPrecisionConfig) -> MixedPrecisionConfig:
    """Resolve a preset name (``"bf16_mixed"`` or ``"bf16-mixed"``) or pass a config object through.

    Raises:
        ValueError: the name is not a preset; the message lists the presets.
    """
    if isinstance(name, MixedPrecisionConfig):
        return name
    if not isinstance(name, str) or name not in MIXED_PRECISION_RECIPES:
        valid = sorted(n for n in MIXED_PRECISION_RECIPES if "-" not in n)
        raise ValueError(f"mixed_precision={name!r} is not a known preset; use one of {valid} or a MixedPrecisionConfig.")
    return MIXED_PRECISION_RECIPES[name]()
