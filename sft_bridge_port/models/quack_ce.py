"""The chunked LM head + cross-entropy on quack's kernels: one pass over each chunk's logits instead of three.

:class:`~sft_bridge_port.models.linear_ce.LinearCrossEntropy` spends two memory-bound passes per chunk besides the
GEMMs: the forward reads the bf16 logits for the log-sum-exp, the backward reads them again and writes
``(softmax - onehot) * grad``. For a 4096-token chunk of a 128k vocabulary that is 0.76 + 0.69 ms on an H100;
quack's ``cross_entropy_fwd_out`` holds each row in a thread-block cluster's shared memory and writes loss and
``softmax - onehot`` (in place of the logits) after one read: 0.73 ms (bench/scripts/probe_ce.py, round 7).

The forward does not know the per-token gradient yet (the loss mask and normalisation come later), so the kept
``dlogits`` are unscaled and the backward applies the gradient on the narrow side of each GEMM:
``dx = grad ⊙ (dlogits @ W)`` and ``dW += dlogits^T @ (grad ⊙ h)`` (``[tokens, h]`` tensors instead of
``[tokens, V]``), with no pass over the logits at all. ``keep_logits`` keeps the ``dlogits`` (the same bytes as the
logits); without it the backward recomputes the chunk's logits and runs the same kernel again, so both give the same
bits. The LM head's forward and weight-gradient GEMMs run on quack's GEMM (5 % and 4 % faster than cuBLAS at the 1B
shapes in a loop of each, bench/scripts/probe_gemm_shapes.py; inside a step the weight gradient may not be, see
bench/NOTES.md finding 22); the input-gradient GEMM stays cuBLAS's (equal). Measured with those GEMMs, against the
torch path: 442.6 -> 435.3 ms and -1.9 GiB per 1B step of 32768 tokens on an H100 (bench/NOTES.md, round 7).

Same values as the torch path up to bf16 rounding (the gradient is rounded before it is scaled, not after). It runs
only where that is the whole story: every label in ``[0, V)`` (megatron's loss for an out-of-range label, ``lse -
max`` with the plain softmax as gradient, has no counterpart in quack's kernel; :mod:`~sft_bridge_port.models.
linear_ce` checks the range without stalling the GPU), bf16/fp16 hidden states and head, a Hopper/Blackwell GPU,
quack installed. ``GPTModelProvider.ce_kernel`` chooses, with the rules of the other kernel fields.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from sft_bridge_port.models.flash_cute import check_choice, declined
from sft_bridge_port.models.fused_ops import accumulated_wgrad, wgrad_accumulator
from sft_bridge_port.models.quack_mlp import quack_gemms
from sft_bridge_port.models.quack_norm import quack_installed, quack_refusal

KERNELS = ("auto", "quack", "torch")
_NO_IGNORE = -1  # quack's ignore_index: no label in [0, V) equals it


def check_ce_kernel(kernel: str) -> None:
    """:func:`~sft_bridge_port.models.flash_cute.check_choice` for ``ce_kernel``."""
    hint = "pip install quack-kernels (or flash-attn-4, which depends on it)"
    check_choice("ce_kernel", kernel, KERNELS, "quack", quack_installed(), hint)


@functools.cache
def quack_cross_entropy() -> Callable[..., None]:
    """quack's ``cross_entropy_fwd_out(x, target, target_logit, loss, lse, dx, weight, ignore_index)``."""
    from quack.cross_entropy import cross_entropy_fwd_out

    return cross_entropy_fwd_out


def quack_ce_runs(kernel: str, hidden: torch.Tensor, weight: torch.Tensor, labels_in_range: Callable[[], bool]) -> bool:
    """Whether the chunked loss takes :class:`QuackLinearCrossEntropy` (``hidden`` 2-D); ``"quack"`` raises why not.

    ``labels_in_range`` is asked last, only when everything else fits (it may wait for the GPU).
    """
    if declined(kernel, "torch", hidden.shape[0]):
        return False
    why = quack_refusal(hidden, weight)
    if why is None and (hidden.shape[-1] % 8 or weight.shape[0] % 8):
        why = f"hidden size {hidden.shape[-1]} / vocabulary {weight.shape[0]} are not multiples of 8"
    if why is None and not labels_in_range():
        why = f"a label lies outside [0, {weight.shape[0]}) (megatron's loss for it needs the torch path)"
    if kernel == "quack" and why is not None:
        raise RuntimeError(f"ce_kernel='quack' but quack's cross-entropy cannot run here: {why}; "
                           "set ce_kernel='auto' to fall back to the torch path")  # fmt: skip
    return why is None


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> None:
    """``out = hidden @ weight.T`` (one chunk's logits) on quack's GEMM."""
    quack_gemms().gemm(hidden, weight.t(), out=out)


def head_wgrad(dlogits: torch.Tensor, scaled: torch.Tensor, grad_w: torch.Tensor) -> None:
    """``grad_w += dlogits.T @ scaled`` (fp32 or bf16 accumulator) on quack's GEMM."""
    quack_gemms().gemm_add_inplace(dlogits.t(), scaled, grad_w, dynamic_scheduler=True)


def _dlogits(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, out: torch.Tensor,
             loss: torch.Tensor, grad: bool) -> None:
    """``out = hidden @ weight.T``, then ``loss`` (and ``out = softmax(out) - onehot(labels)`` when ``grad``)."""
    head_logits(hidden, weight, out)
    quack_cross_entropy()(out, labels, None, loss, None, out if grad else None, None, _NO_IGNORE)


class QuackLinearCrossEntropy(torch.autograd.Function):
    """:class:`~sft_bridge_port.models.linear_ce.LinearCrossEntropy`'s contract on quack's kernels (module doc)."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int, fuse_wgrad: bool = False,
        keep_logits: bool = False,
    ) -> torch.Tensor:
        n, vocab = hidden.shape[0], weight.shape[0]
        loss = torch.empty(n, dtype=torch.float32, device=hidden.device)
        kept = hidden.new_empty(n, vocab) if keep_logits else None
        scratch = None if keep_logits else hidden.new_empty(min(chunk, n), vocab)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            out = kept[start:end] if kept is not None else scratch[: end - start]
            _dlogits(hidden[start:end], weight, labels[start:end], out, loss[start:end], grad=kept is not None)
        ctx.save_for_backward(hidden, weight, labels, kept)
        ctx.chunk, ctx.fuse_wgrad = chunk, fuse_wgrad
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        hidden, weight, labels, kept = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, chunk = hidden.shape[0], ctx.chunk
        grad = grad_loss.float().unsqueeze(-1)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = wgrad_accumulator(weight, ctx.fuse_wgrad) if need_w else None
        scratch = hidden.new_empty(min(chunk, n), weight.shape[0]) if kept is None else None
        loss = torch.empty(min(chunk, n), dtype=torch.float32, device=hidden.device) if kept is None else None
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            if kept is not None:
                dlogits = kept[start:end]
            else:
                dlogits = scratch[: end - start]
                _dlogits(hidden[start:end], weight, labels[start:end], dlogits, loss[: end - start], grad=True)
            if need_h:
                torch.mm(dlogits, weight, out=grad_h[start:end])
            if need_w:
                head_wgrad(dlogits, (hidden[start:end] * grad[start:end]).to(hidden.dtype), grad_w)
        if need_h:
            grad_h.mul_(grad)
        grad_w = None if grad_w is None else accumulated_wgrad(weight, grad_w, hidden.dtype)
        return grad_h, grad_w, None, None, None, None
