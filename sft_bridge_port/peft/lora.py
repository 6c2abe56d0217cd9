"""LoRA with Bridge's fields: a low-rank update on each fused megatron linear layer ("performant" LoRA).

``linear_qkv`` gets one adapter whose B produces the interleaved q/k/v rows (A shared by q, k and v), and
``linear_fc1`` one whose B produces ``[gate; up]``; :mod:`sft_bridge_port.peft.canonical_lora` keeps them apart
like HF PEFT does. Exported to HF PEFT, the shared A is written for each of q/k/v (gate/up) with its slice
of B, which is exactly the same function.

Example::

    peft = LoRA(target_modules=["linear_qkv", "linear_proj"], dim=8, alpha=16)
    model_chunks = peft(model_chunks)          # 2 adapters per layer, scale = 16 / 8
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from sft_bridge_port.peft.adapters import LoRAAdapter, check_init_method, layout_of
from sft_bridge_port.peft.base import PEFT


def parse_dtype(value: torch.dtype | str | None, field_name: str) -> torch.dtype | None:
    """``torch.bfloat16`` / ``"bfloat16"`` / ``"bf16"`` -> ``torch.bfloat16``; None stays None."""
    if value is None or isinstance(value, torch.dtype):
        return value
    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16"}
    name = aliases.get(str(value).removeprefix("torch."), str(value).removeprefix("torch."))
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"peft.{field_name}={value!r} is not a floating dtype; use e.g. torch.bfloat16 or 'bf16'")
    return dtype


def is_glu_fc1(base: torch.nn.Module, name: str) -> bool:
    """``linear_fc1`` of a gated MLP: its local output rows are ``[gate_r; up_r]``."""
    return name == "linear_fc1" and bool(getattr(getattr(base, "config", None), "gated_linear_unit", False))


@dataclasses.dataclass(kw_only=True)
class LoRA(PEFT):
    """Low-rank adapters ``W + (alpha / dim) * B @ A`` on the matched linear layers, base weights frozen.

    Attributes:
        target_modules: megatron names or wildcards (``*.layers.0.*.linear_qkv``); see ``ModuleMatcher``.
        exclude_modules: with ``target_modules=[]``, linear layers to skip.
        dim: rank of the update. alpha: scale numerator (scale = alpha / dim).
        dropout: dropout probability on the adapter path; dropout_position: "pre" (input) or "post" (output).
        lora_A_init_method / lora_B_init_method: "xavier", "kaiming", "normal" or "zero".
        a2a_experimental, normalize_moe_lora: Bridge's MoE/all-to-all options; only False is supported.
        share_expert_adapters: Bridge's MoE option; there are no expert adapters here, so it has no effect.
        lora_dtype: adapter weight dtype (None: the base weight's dtype).
    """

    dim: int = 32
    alpha: int = 32
    dropout: float = 0.0
    dropout_position: Literal["pre", "post"] = "pre"
    lora_A_init_method: str = "xavier"
    lora_B_init_method: str = "zero"
    a2a_experimental: bool = False
    lora_dtype: torch.dtype | None = None
    normalize_moe_lora: bool = False
    share_expert_adapters: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"peft.dim must be a positive integer, got {self.dim!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"peft.dropout must be in [0, 1), got {self.dropout!r}")
        if self.dropout_position not in ("pre", "post"):
            raise ValueError(f"peft.dropout_position must be 'pre' or 'post', got {self.dropout_position!r}")
        check_init_method("lora_A_init_method", self.lora_A_init_method)
        check_init_method("lora_B_init_method", self.lora_B_init_method)
        for flag in ("a2a_experimental", "normalize_moe_lora"):
            if getattr(self, flag):
                raise ValueError(f"peft.{flag}=True (MoE expert adapters) is not supported; set it to False")
        self.lora_dtype = parse_dtype(self.lora_dtype, "lora_dtype")

    def adapter_kwargs(self, base: torch.nn.Module) -> dict:
        """Keyword arguments shared by every adapter this config builds on ``base``."""
        return dict(
            dropout=float(self.dropout), dropout_position=self.dropout_position,
            a_init=self.lora_A_init_method, b_init=self.lora_B_init_method,
            dtype=self.lora_dtype or base.weight.dtype, device=base.weight.device,
        )  # fmt: skip

    def make_adapter(self, base: torch.nn.Module, name: str, full_name: str, pattern: str) -> torch.nn.Module:
        """One fused adapter per layer (see the module docstring)."""
        return LoRAAdapter(layout_of(base), self.dim, self.alpha, swiglu_out=is_glu_fc1(base, name),
                           **self.adapter_kwargs(base))
