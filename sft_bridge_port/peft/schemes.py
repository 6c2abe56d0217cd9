"""``default_peft_config``: the PEFT object a recipe's ``peft_scheme`` argument names (Bridge's helper)."""

from __future__ import annotations

from typing import Any

from sft_bridge_port.peft.base import PEFT
from sft_bridge_port.peft.dora import DoRA
from sft_bridge_port.peft.lora import LoRA

SCHEMES = {"lora": LoRA, "dora": DoRA}


def default_peft_config(peft_scheme: str | PEFT | None, **kwargs: Any) -> PEFT | None:
    """``"lora"`` -> ``LoRA(**kwargs)``, ``"dora"`` -> ``DoRA(**kwargs)``, ``"none"``/None -> None, a PEFT -> itself.

    Example: ``default_peft_config("LoRA", dim=8)`` == ``LoRA(dim=8)`` (case-insensitive).

    Raises:
        ValueError: an unknown scheme name (lists the choices).
        TypeError: a value that is neither a string, None nor a PEFT object.
    """
    if peft_scheme is None:
        return None
    if isinstance(peft_scheme, PEFT):
        return peft_scheme
    if not isinstance(peft_scheme, str):
        raise TypeError(f"peft_scheme must be a string, None or a PEFT object, got {type(peft_scheme).__name__}")
    key = peft_scheme.strip().lower()
    if key in ("none", "null", ""):
        return None
    if key not in SCHEMES:
        raise ValueError(f"peft_scheme={peft_scheme!r} is not supported; choose one of {sorted(SCHEMES) + ['none']}")
    return SCHEMES[key](**kwargs)
