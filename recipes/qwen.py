"""Qwen2, Qwen2.5 and Qwen3 (dense) SFT and LoRA recipes with Megatron-Bridge v0.5.1's defaults.

Every recipe: packed SQuAD at seq 2048, MBS 1, GBS 8, 1000 iterations, 50 warm-up, cosine to 0, LR 5e-6 (SFT)
/ 1e-4 (LoRA dim 32, alpha 32), bf16 mixed precision. GPU counts assume H100 80GB; sizes use Bridge's
spelling (``500m`` = 0.5B, ``1p5b`` = 1.5B). ``qwen25_3b`` is beyond Bridge. Pass ``hf_path=`` for other weights.
"""

from __future__ import annotations

from typing import Any, Callable

from sft_bridge_port.config import ConfigContainer

from recipes.common import bridge_aliases, build_recipe

# name -> (public id, (TP, PP) for SFT, TP for LoRA, SFT needs full recompute)
_SIZES: dict[str, tuple[str, tuple[int, int], int, bool]] = {
    "qwen2_500m": ("Qwen/Qwen2-0.5B", (1, 1), 1, False),
    "qwen2_1p5b": ("Qwen/Qwen2-1.5B", (1, 1), 1, False),
    "qwen2_7b": ("Qwen/Qwen2-7B", (2, 1), 1, False),
    "qwen2_72b": ("Qwen/Qwen2-72B", (8, 4), 8, False),
    "qwen25_500m": ("Qwen/Qwen2.5-0.5B", (1, 1), 1, False),
    "qwen25_1p5b": ("Qwen/Qwen2.5-1.5B", (1, 1), 1, False),
    "qwen25_3b": ("Qwen/Qwen2.5-3B", (1, 1), 1, False),
    "qwen25_7b": ("Qwen/Qwen2.5-7B", (2, 1), 1, False),
    "qwen25_14b": ("Qwen/Qwen2.5-14B", (4, 1), 1, False),
    "qwen25_32b": ("Qwen/Qwen2.5-32B", (8, 2), 8, False),
    "qwen25_72b": ("Qwen/Qwen2.5-72B", (8, 4), 8, False),
    "qwen3_600m": ("Qwen/Qwen3-0.6B", (1, 1), 1, False),
    "qwen3_1p7b": ("Qwen/Qwen3-1.7B", (1, 1), 1, False),
    "qwen3_4b": ("Qwen/Qwen3-4B", (2, 1), 1, False),
    "qwen3_8b": ("Qwen/Qwen3-8B", (4, 1), 1, False),
    "qwen3_14b": ("Qwen/Qwen3-14B", (8, 1), 1, False),
    "qwen3_32b": ("Qwen/Qwen3-32B", (8, 2), 1, True),
}


def _qwen(size: str, hf_path: str | None, peft_scheme: Any = None) -> ConfigContainer:
    """One Qwen recipe: the template with this size's parallelism (and full recompute for Qwen3-32B)."""
    model_id, (tp, pp), peft_tp, recompute = _SIZES[size]
    is_peft = peft_scheme is not None
    cfg = build_recipe(hf_path or model_id, peft_scheme=peft_scheme, tp=peft_tp if is_peft else tp,
                       pp=1 if is_peft else pp)
    if recompute:
        cfg.model.recompute_granularity, cfg.model.recompute_method, cfg.model.recompute_num_layers = "full", "uniform", 1
    return cfg


def _make(size: str) -> tuple[Callable[..., ConfigContainer], Callable[..., ConfigContainer]]:
    """The ``<size>_sft(hf_path=...)`` and ``<size>_peft(peft_scheme="lora", hf_path=...)`` functions."""
    model_id, (tp, pp), peft_tp, _ = _SIZES[size]

    def sft(hf_path: str = model_id) -> ConfigContainer:
        return _qwen(size, hf_path)

    def peft(peft_scheme: Any = "lora", hf_path: str = model_id) -> ConfigContainer:
        return _qwen(size, hf_path, peft_scheme)

    for fn, kind, doc in ((sft, "sft", f"Full SFT of {model_id} on {tp * pp} GPU(s) (TP{tp} x PP{pp})."),
                          (peft, "peft", f"LoRA of {model_id} on {peft_tp} GPU(s) (TP{peft_tp}).")):
        fn.__name__ = fn.__qualname__ = f"{size}_{kind}"
        fn.__doc__ = doc
    return sft, peft


RECIPES = {fn.__name__: fn for size in _SIZES for fn in _make(size)}
_V06_GPUS = {f"{size}_{kind}": gpus for size, (_, (tp, pp), peft_tp, _) in _SIZES.items()
             for kind, gpus in (("sft", tp * pp), ("peft", peft_tp))}
ALIASES = bridge_aliases(RECIPES, _V06_GPUS)
globals().update({**RECIPES, **ALIASES})  # qwen3_8b_sft, qwen3_8b_sft_config, ... importable from this module
__all__ = [*RECIPES, *ALIASES]
