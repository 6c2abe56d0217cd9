"""The residual add folded into the RMSNorm that reads its result next (quack's rmsnorm with a residual input).

In megatron-core's layer each sub-block ends with ``h = residual + branch`` (the bias-dropout-add, with no bias and
no dropout in SFT) and the next sub-block starts with ``norm(h)``. Apart, the add reads two tensors and writes one,
the norm reads one and writes one; in the backward autograd adds the norm's input gradient to the residual
stream's with another read-two-write-one kernel. quack's RMSNorm takes the residual: one kernel reads branch and
residual and writes ``h`` and ``norm(h)``, its backward writes ``norm'(dout) + dh`` once. In a 1x8 1B step these
adds were 4.1 ms forward and 4.1 ms backward (bench/NOTES.md, round 7 profile).

megatron's ``TransformerLayer`` stays as it is. Its two bias-dropout-adds are :class:`ResidualIntoNorm` (the fast
layer spec's ``self_attn_bda`` / ``mlp_bda``), which :func:`link_residual_norms` binds, once the model is built, to
the norm that reads their output next (the layer's pre-MLP norm; the next layer's input norm, or the final norm).
Where the fused kernel applies, the add returns ``h`` and leaves ``norm(h)`` with that norm
(:meth:`~sft_bridge_port.models.quack_norm.QuackableRMSNorm.add_and_normalize`); the norm, called next with that
very tensor object, unchanged since (same version counter), returns it instead of normalising again. Any other
call takes the usual path, and so does everything the fused kernel is not the same computation for: a bias,
dropout in training, a norm that would not run quack's kernel (see ``norm_kernel``), activation recompute or
offloading (their replays call the norm without the add), CUDA graphs.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add

from sft_bridge_port.models.quack_norm import QuackableRMSNorm


class ResidualIntoNorm:
    """A layer's bias-dropout-add (megatron's calling convention) that can hand its sum to the next norm."""

    def __init__(self) -> None:
        self.next_norm: QuackableRMSNorm | None = None

    def __call__(self, training: bool, fused: bool) -> Callable[..., torch.Tensor]:
        megatron_bda = get_bias_dropout_add(training, fused)

        def bias_dropout_add(x_with_bias: tuple[torch.Tensor, Any], residual: torch.Tensor, prob: float):
            x, bias = x_with_bias
            norm = self.next_norm
            if norm is not None and bias is None and (prob == 0.0 or not training) and norm.takes_residual(x, residual):
                return norm.add_and_normalize(x, residual)
            return megatron_bda(x_with_bias, residual, prob)

        return bias_dropout_add


def _replays_forward(config: Any) -> bool:
    """Whether a setting re-runs (or detours) a norm's forward without the residual add before it."""
    return bool(
        getattr(config, "recompute_granularity", None)
        or getattr(config, "fine_grained_activation_offloading", False)
        or getattr(config, "enable_cuda_graph", False)
        or getattr(config, "cuda_graph_impl", "none") not in ("none", None)
        or getattr(config, "cpu_offloading", False)
    )


def link_residual_norms(model: torch.nn.Module) -> int:
    """Bind every :class:`ResidualIntoNorm` of ``model``'s decoder to the norm that reads its sum next.

    Returns the number of adds bound (0 where the model's settings rule the fusion out, see module doc).
    """
    block = getattr(model, "decoder", None)
    if block is None or _replays_forward(block.config):
        return 0
    layers = list(block.layers)
    after_mlp = [layer.input_layernorm for layer in layers[1:]] + [getattr(block, "final_layernorm", None)]
    bound = 0
    for layer, next_norm in zip(layers, after_mlp):
        for bda, norm in ((layer.self_attn_bda, layer.pre_mlp_layernorm), (layer.mlp_bda, next_norm)):
            if isinstance(bda, ResidualIntoNorm) and isinstance(norm, QuackableRMSNorm):
                bda.next_norm = norm
                bound += 1
    return bound
