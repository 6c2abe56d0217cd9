"""Packed causal flash attention on PyTorch's own FA2 kernels, without ``varlen_attn``'s custom-op layer.

``torch.nn.attention.varlen.varlen_attn`` reaches ``aten._flash_attention_forward`` / ``_backward`` through two
``torch.library`` custom ops, whose Python dispatch (argument defaults, schema and aliasing checks, the registered
autograd formula) runs on the host twice per layer and micro-batch. A 1B step at one 4096-token pack per micro-batch
was host-bound on an H100; :class:`FlashVarlen` calls the same two kernels with the same arguments from one
``autograd.Function``: same values, less Python per call (621.6 -> 528.4 ms per step; bench/NOTES.md, round 4).

It is used only when this torch's kernels take the arguments it passes (:func:`direct_flash_supported` reads
their schemas); otherwise :class:`~sft_bridge_port.models.attention.SDPAttention` keeps calling ``varlen_attn``.

Example (CUDA, bf16; two documents of 3 and 2 tokens, 4 query heads sharing 2 KV heads)::

    cu = torch.tensor([0, 3, 5], dtype=torch.int32, device="cuda")
    out = flash_varlen(q, k, v, cu, cu, 3, 3, scale=None, left=None)     # q [5, 4, 64], k/v [5, 2, 64]
"""

from __future__ import annotations

import functools

import torch

_NEEDED = {"scale", "window_size_left", "window_size_right"}


@functools.cache
def direct_flash_supported() -> bool:
    """Whether ``aten._flash_attention_forward/backward`` exist here and take scale and window keywords."""
    try:
        ops = (torch.ops.aten._flash_attention_forward.default, torch.ops.aten._flash_attention_backward.default)
    except (AttributeError, RuntimeError):
        return False
    return all(_NEEDED <= {a.name for a in op._schema.arguments} for op in ops)


class FlashVarlen(torch.autograd.Function):
    """Causal (optionally sliding-window) attention over packed documents, ``[t, heads, d]`` in and out."""

    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float | None, left: int | None):
        window = -1 if left is None else int(left)  # -1 with is_causal: plain causal (varlen_attn's (-1, 0))
        out, lse, seed, offset, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_q, cu_k, max_q, max_k, 0.0, left is None, False,
            scale=scale, window_size_left=window, window_size_right=0,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k, seed, offset)
        ctx.args = (max_q, max_k, scale, window)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, cu_q, cu_k, seed, offset = ctx.saved_tensors
        max_q, max_k, scale, window = ctx.args
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad_out.contiguous(), q, k, v, out, lse, cu_q, cu_k, max_q, max_k, 0.0, window == -1, seed, offset,
            scale=scale, window_size_left=window, window_size_right=0,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None, None, None


def flash_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor, max_q: int,
    max_k: int, scale: float | None = None, left: int | None = None,
) -> torch.Tensor:
    """Each query of document ``i`` attends to that document's keys up to its own position (flash-attention's
    bottom-right alignment when a document has fewer queries than keys), at most ``left`` positions back."""
    return FlashVarlen.apply(q, k, v, cu_q, cu_k, max_q, max_k, scale, left)
