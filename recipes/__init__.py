"""Recipe functions with Megatron-Bridge's names: ``from recipes.llama import llama3_8b_sft_config``.

A recipe is a zero-argument function (optionally ``hf_path=``, and ``peft_scheme=`` for PEFT) that returns a
``ConfigContainer`` offline. Our names (``llama3_8b_sft``) and Bridge's (``llama3_8b_sft_config``,
``llama3_8b_peft_config(peft_scheme="lora")``, v0.2 ``llama3_8b_finetune_config(**kwargs)``, v0.6
``llama3_8b_sft_2gpu_h100_bf16_config``) are the same functions.

    from recipes import get_recipe, list_recipes
    cfg = get_recipe("tiny_llama_sft")()
"""

from __future__ import annotations

from typing import Callable

from sft_bridge_port.config import ConfigContainer

from recipes import llama, mistral, qwen, tiny

_MODULES = (tiny, llama, qwen, mistral)
RECIPES: dict[str, Callable[..., ConfigContainer]] = {n: f for m in _MODULES for n, f in m.RECIPES.items()}
ALIASES: dict[str, Callable[..., ConfigContainer]] = {n: f for m in _MODULES for n, f in m.ALIASES.items()}


def get_recipe(name: str) -> Callable[..., ConfigContainer]:
    """The recipe function called ``name`` (ours or a Bridge alias).

    Raises:
        KeyError: unknown name (the message suggests close names).
    """
    if name in RECIPES:
        return RECIPES[name]
    if name in ALIASES:
        return ALIASES[name]
    import difflib

    close = difflib.get_close_matches(name, [*RECIPES, *ALIASES], n=3)
    raise KeyError(f"unknown recipe {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))


def list_recipes(aliases: bool = False) -> dict[str, str]:
    """``{name: first line of its doc string}`` for every recipe (and every Bridge alias when ``aliases``)."""
    names = {**RECIPES, **(ALIASES if aliases else {})}
    return {name: (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "" for name, fn in names.items()}


__all__ = ["ALIASES", "RECIPES", "get_recipe", "list_recipes"]
