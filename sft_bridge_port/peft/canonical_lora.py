"""CanonicalLoRA: separate q/k/v and gate/up adapters on megatron's fused layers (HF PEFT's layout).

Targets are ``linear_q, linear_k, linear_v, linear_proj, linear_fc1_up, linear_fc1_gate, linear_fc2``
(wildcards allowed: ``*.layers.0.*.linear_q``). ``linear_q`` selects the ``q`` part of ``linear_qkv``; the
parts' outputs are put back into the fused layout of this TP rank::

    linear_qkv, 2 local query groups, 2 heads per group:  [q0 q1 k0 v0 | q2 q3 k1 v1]
    linear_fc1 (gated):                                   [gate_r ; up_r]

A part that is not targeted contributes zeros. Parameter names are
``...linear_qkv.adapter.adapter_q.linear_in.weight`` (``adapter_k``, ``adapter_v``, ``adapter_gate``,
``adapter_up``); each part's B is a plain column split of its own full matrix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sft_bridge_port.peft.adapters import LoRAAdapter, adapter_sharded_tensors, layout_of
from sft_bridge_port.peft.lora import LoRA, is_glu_fc1
from sft_bridge_port.peft.module_matcher import matches

# canonical target suffix -> (fused megatron module name, part name)
PARTS = {
    "linear_q": ("linear_qkv", "q"), "linear_k": ("linear_qkv", "k"), "linear_v": ("linear_qkv", "v"),
    "linear_fc1_gate": ("linear_fc1", "gate"), "linear_fc1_up": ("linear_fc1", "up"),
}  # fmt: skip
PART_ORDER = {"linear_qkv": ("q", "k", "v"), "linear_fc1": ("gate", "up")}


def interleave_groups(parts: list[torch.Tensor], groups: int, dim: int) -> torch.Tensor:
    """Concatenate ``parts`` group by group along ``dim``.

    Example (``dim=0``, 2 groups): q = [q0 q1 q2 q3], k = [k0 k1], v = [v0 v1] -> [q0 q1 k0 v0 q2 q3 k1 v1].
    With ``groups=1`` this is a plain concatenation ([gate; up]).
    """
    moved = [p.movedim(dim, 0) for p in parts]  # [rows_i, *rest]
    rest = moved[0].shape[1:]
    grouped = [p.reshape(groups, -1, *rest) for p in moved]  # [G, rows_i / G, *rest]
    return torch.cat(grouped, dim=1).reshape(-1, *rest).movedim(0, dim)


def part_rows(base: torch.nn.Module, fused: str, tp_size: int) -> tuple[dict[str, int], int]:
    """Local output rows of each part and the number of local groups to interleave by."""
    cfg = base.config
    if fused == "linear_qkv":
        heads, groups = cfg.num_attention_heads, cfg.num_query_groups or cfg.num_attention_heads
        head_dim = cfg.kv_channels or cfg.hidden_size // heads
        local_groups = groups // tp_size
        q = heads // tp_size * head_dim
        return {"q": q, "k": local_groups * head_dim, "v": local_groups * head_dim}, local_groups
    half = base.weight.shape[0] // 2
    return {"gate": half, "up": half}, 1


class SplitLoRAAdapter(torch.nn.Module):
    """LoRA adapters for some parts of a fused column-parallel layer (children ``adapter_<part>``)."""

    def __init__(self, base: torch.nn.Module, fused: str, parts: set[str], dim: int, alpha: float, **kwargs: Any):
        super().__init__()
        self.layout, self.fused, self.enabled = layout_of(base), fused, True
        if self.layout.mode != "column":
            raise TypeError(f"{fused} must be column-parallel for CanonicalLoRA, got {self.layout.mode}")
        self.rows, self.groups = part_rows(base, fused, self.layout.tp_size)
        for part in PART_ORDER[fused]:
            if part in parts:
                self.add_module(f"adapter_{part}", LoRAAdapter(self.layout, dim, alpha, out_rows=self.rows[part], **kwargs))

    def parts(self) -> dict[str, LoRAAdapter]:
        """The adapters present, by part name (``{"q": ..., "v": ...}``)."""
        return {p: getattr(self, f"adapter_{p}") for p in PART_ORDER[self.fused] if hasattr(self, f"adapter_{p}")}

    def _combine(self, made: dict[str, torch.Tensor], dim: int) -> torch.Tensor:
        like = next(iter(made.values()))
        full = []
        for part in PART_ORDER[self.fused]:
            if part in made:
                full.append(made[part])
            else:
                shape = list(like.shape)
                shape[dim] = self.rows[part]
                full.append(like.new_zeros(shape))
        return interleave_groups(full, self.groups, dim)

    def delta_weight(self) -> torch.Tensor:
        """fp32 ``[out_local, in]`` update in the fused layout."""
        return self._combine({p: a.delta_weight() for p, a in self.parts().items()}, dim=0)

    def merged_weight(self, base: torch.nn.Module) -> torch.Tensor:
        return base.weight.float() + self.delta_weight()

    def forward(self, base: torch.nn.Module, x: torch.Tensor, output: Any) -> Any:
        if not self.enabled:
            return output
        delta = self._combine({p: a.delta(x) for p, a in self.parts().items()}, dim=-1)
        if isinstance(output, tuple):
            return (output[0] + delta, *output[1:])
        return output + delta

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        out = {}
        for part, adapter in self.parts().items():
            out.update(adapter_sharded_tensors(adapter, f"{prefix}adapter_{part}.", sharded_offsets, metadata))
        return out


@dataclasses.dataclass(kw_only=True)
class CanonicalLoRA(LoRA):
    """LoRA with HF PEFT's unfused q/k/v and gate/up adapters (Bridge's ``CanonicalLoRA`` fields)."""

    target_modules: list[str] = dataclasses.field(
        default_factory=lambda: [
            "linear_q", "linear_k", "linear_v", "linear_proj", "linear_fc1_up", "linear_fc1_gate", "linear_fc2",
        ]  # fmt: skip
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        for target in self.target_modules:
            if target.endswith(("linear_qkv", "linear_fc1")):
                raise ValueError(
                    f"CanonicalLoRA.target_modules has {target!r}: use the parts (linear_q/linear_k/linear_v, "
                    "linear_fc1_gate/linear_fc1_up), or LoRA for the fused layer"
                )
        if not self.target_modules:
            raise ValueError("CanonicalLoRA needs target_modules (exclude_modules mode is LoRA-only)")

    def _canonical(self) -> list[tuple[str, str, str | None]]:
        """``(original target, pattern on megatron names, part or None)`` for each target."""
        out = []
        for target in self.target_modules:
            for suffix, (fused, part) in PARTS.items():
                if target.endswith(suffix):
                    out.append((target, target[: -len(suffix)] + fused, part))
                    break
            else:
                out.append((target, target, None))
        return out

    def _matching(self, name: str, full_name: str) -> list[tuple[str, str | None]]:
        return [(t, part) for t, pattern, part in self._canonical() if matches(pattern, name, full_name)]

    def matched_targets(self, module: torch.nn.Module, name: str, full_name: str) -> list[str]:
        """The canonical targets (``linear_q`` ...) that select this fused megatron module."""
        return [t for t, _ in self._matching(name, full_name)]

    def make_adapter(self, base: torch.nn.Module, name: str, full_name: str, pattern: str) -> torch.nn.Module:
        parts = {part for _, part in self._matching(name, full_name) if part is not None}
        if not parts:
            return super().make_adapter(base, name, full_name, pattern)
        fused = "linear_qkv" if parts <= {"q", "k", "v"} else "linear_fc1"
        if fused == "linear_fc1" and not is_glu_fc1(base, name):
            raise ValueError(f"{full_name} is not a gated MLP, so linear_fc1_gate/linear_fc1_up do not exist")
        return SplitLoRAAdapter(base, fused, parts, self.dim, self.alpha, **self.adapter_kwargs(base))
