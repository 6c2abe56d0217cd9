"""DoRA: weight-decomposed LoRA, with the semantics of HF PEFT's ``use_dora=True``.

The adapted weight is a learned per-output-row magnitude ``m`` times the direction of ``W + s B A``::

    W' = (m / ||W + s B A||_row) * (W + s B A)          ||.||_row: L2 norm of each output row (over inputs)
    y  = base(x) + (ratio - 1) * (W x) + ratio * s B A x,   ratio = m / ||W + s B A||_row  (norm detached)

``m`` starts at ``||W||_row`` so the adapted model starts equal to the base model (with B = 0). The norm is
treated as a constant in the backward pass, as in the DoRA paper (sec. 4.3) and HF PEFT. Under tensor
parallelism a column-parallel layer owns whole rows (``m`` split like B); a row-parallel layer owns a slice of
every row, so the squared row norms are summed over the TP group (``m`` replicated).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from sft_bridge_port.peft.adapters import LoRAAdapter, layout_of, mark_tp
from sft_bridge_port.peft.lora import LoRA, is_glu_fc1


class DoRAAdapter(LoRAAdapter):
    """A :class:`LoRAAdapter` plus the magnitude vector ``weight_magnitude`` ``[out_local]``.

    Args:
        base: the layer being adapted (its current weight sets the initial magnitude).
        *args, **kwargs: as for :class:`LoRAAdapter`.
    """

    def __init__(self, base: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.layout.gather_output:
            raise TypeError("DoRA does not support a column-parallel layer with gather_output=True")
        with torch.no_grad():
            magnitude = self.weight_norm(base).to(self.linear_out.weight.dtype)
        self.weight_magnitude = torch.nn.Parameter(magnitude)
        mark_tp(self.weight_magnitude, 0 if self.layout.mode == "column" else None, self.layout)

    def weight_norm(self, base: torch.nn.Module) -> torch.Tensor:
        """``||W + s B A||`` per output row, fp32, no gradient (all-reduced over TP for row-parallel)."""
        with torch.no_grad():
            squares = (base.weight.float() + self.delta_weight()).pow(2).sum(dim=1)  # [out_local]
            if self.layout.mode == "row" and self.layout.tp_size > 1:
                torch.distributed.all_reduce(squares, group=self.layout.tp_group)
            return squares.sqrt()

    def ratio(self, base: torch.nn.Module) -> torch.Tensor:
        """``m / ||W + s B A||`` ``[out_local]`` in fp32 (differentiable in ``m`` only)."""
        return self.weight_magnitude.float() / self.weight_norm(base)

    def merged_weight(self, base: torch.nn.Module) -> torch.Tensor:
        """``ratio[:, None] * (W + s B A)`` in fp32."""
        return self.ratio(base)[:, None] * (base.weight.float() + self.delta_weight())

    def forward(self, base: torch.nn.Module, x: torch.Tensor, output: Any) -> Any:
        """``y + (ratio - 1) * (y - bias) + ratio * delta(x)``; bias stays outside the rescaling."""
        if not self.enabled:
            return output
        y = output[0] if isinstance(output, tuple) else output
        returned_bias = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        bias = getattr(base, "bias", None)
        y_no_bias = y
        if returned_bias is None and isinstance(bias, torch.Tensor) and bias.numel() > 0:
            y_no_bias = y - bias  # the bias was added inside the base layer: keep it out of the rescaling
        ratio = self.ratio(base).to(y.dtype)
        new = y + (ratio - 1) * y_no_bias + ratio * self.delta(x)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    def split_axes(self) -> dict[str, int]:
        axes = super().split_axes()
        if self.layout.mode == "column":
            axes["weight_magnitude"] = 0
        return axes

    def swiglu_keys(self) -> tuple[str, ...]:
        return ("linear_out.weight", "weight_magnitude") if self.swiglu_out else ()


@dataclasses.dataclass(kw_only=True)
class DoRA(LoRA):
    """Bridge's ``DoRA`` config: LoRA's fields with ``alpha=64``; adapters carry a magnitude vector."""

    alpha: int = 64

    def make_adapter(self, base: torch.nn.Module, name: str, full_name: str, pattern: str) -> torch.nn.Module:
        """A DoRA adapter whose magnitude starts at the row norms of ``base``'s current weight."""
        return DoRAAdapter(base, layout_of(base), self.dim, self.alpha, swiglu_out=is_glu_fc1(base, name),
                           **self.adapter_kwargs(base))
