"""Mistral 7B SFT and LoRA recipes (beyond Bridge, which has a Mistral converter but no recipe).

Same defaults as Bridge's Llama 3 8B recipes: packed SQuAD at seq 4096, GBS 8, LR 5e-6 / 1e-4, SFT on 2 H100
(TP2), LoRA (dim 8, alpha 16) on 1. Pass ``hf_path=`` for other weights (e.g. an Instruct variant folder).
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.config import ConfigContainer

from recipes.common import bridge_aliases
from recipes.llama import _llama


def mistral_7b_sft(hf_path: str = "mistralai/Mistral-7B-v0.3") -> ConfigContainer:
    """Full SFT of Mistral 7B v0.3 on 2 GPUs (TP2)."""
    return _llama(hf_path, tp=2)


def mistral_7b_peft(peft_scheme: Any = "lora", hf_path: str = "mistralai/Mistral-7B-v0.3") -> ConfigContainer:
    """LoRA (dim 8, alpha 16) of Mistral 7B v0.3 on 1 GPU."""
    return _llama(hf_path, peft_scheme, peft_fields={"dim": 8, "alpha": 16})


RECIPES = {fn.__name__: fn for fn in (mistral_7b_sft, mistral_7b_peft)}
ALIASES = bridge_aliases(RECIPES, {"mistral_7b_sft": 2, "mistral_7b_peft": 1})
globals().update(ALIASES)
__all__ = [*RECIPES, *ALIASES]
