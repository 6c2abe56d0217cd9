"""Which linear layers get an adapter: Bridge's ``target_modules`` / ``exclude_modules`` rules.

A target is either a module's own name (``"linear_qkv"`` matches every layer's ``linear_qkv``) or a pattern
over the full dotted name, where ``*`` matches any run of characters::

    wildcard_match("*.layers.0.*.linear_qkv", "decoder.layers.0.self_attention.linear_qkv")   -> True
    wildcard_match("*.layers.0.*.linear_qkv", "decoder.layers.10.self_attention.linear_qkv")  -> False

With ``target_modules`` empty, every tensor-parallel linear layer is a target except those named (or
matched) by ``exclude_modules``. Giving both is an error, as in Bridge.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

import torch


def wildcard_match(pattern: str, name: str) -> bool:
    """True when ``name`` matches ``pattern`` in full, ``*`` standing for any characters (dots included)."""
    if "*" not in pattern:
        return False
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name) is not None


def matches(pattern: str, name: str, full_name: str) -> bool:
    """Bridge's rule: the module's own name equals ``pattern``, or its full name matches the wildcard."""
    return name == pattern or wildcard_match(pattern, full_name)


def is_parallel_linear(module: torch.nn.Module) -> bool:
    """megatron-core's Column/RowParallelLinear, or a Transformer Engine linear in column/row mode."""
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    if isinstance(module, (ColumnParallelLinear, RowParallelLinear)):
        return True
    return getattr(module, "parallel_mode", None) in ("column", "row") and hasattr(module, "weight")


@dataclasses.dataclass(kw_only=True)
class ModuleMatcher:
    """Target selection shared by LoRA, DoRA and CanonicalLoRA.

    Attributes:
        target_modules: module names or wildcard patterns to adapt (default: all four GPT linears).
        exclude_modules: with ``target_modules=[]``, names/patterns of linear layers to leave alone.
    """

    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    )
    exclude_modules: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for field_name in ("target_modules", "exclude_modules"):
            value = getattr(self, field_name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value or []):
                raise TypeError(f"peft.{field_name} must be a list of strings, got {value!r}")
        if self.target_modules and self.exclude_modules:
            raise ValueError(
                f"peft.target_modules={self.target_modules} and peft.exclude_modules={self.exclude_modules} "
                "are both set; use one: exclude_modules only applies when target_modules=[]"
            )

    def matched_targets(self, module: torch.nn.Module, name: str, full_name: str) -> list[str]:
        """Every ``target_modules`` entry that selects this module (``["*"]`` in exclude mode, or [])."""
        if self.target_modules:
            return [p for p in self.target_modules if matches(p, name, full_name)]
        if not is_parallel_linear(module) or any(matches(p, name, full_name) for p in self.exclude_modules):
            return []
        return ["*"]

    def match(self, module: torch.nn.Module, name: str, full_name: str) -> str | None:
        """The first target entry that selects this module, or None."""
        hits = self.matched_targets(module, name, full_name)
        return hits[0] if hits else None

    def check_all_matched(self, matched: Iterable[str]) -> None:
        """Raise when a ``target_modules`` entry selected nothing (almost always a typo)."""
        unmatched = sorted(set(self.target_modules) - set(matched))
        if unmatched:
            raise ValueError(
                f"peft.target_modules entries matched no module: {unmatched}. Names are megatron-core's "
                "(linear_qkv, linear_proj, linear_fc1, linear_fc2) or wildcards such as '*.layers.0.*.linear_qkv'"
            )
