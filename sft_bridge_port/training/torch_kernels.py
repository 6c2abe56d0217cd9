"""Vectorised stand-ins for megatron-core's no-apex/no-TE optimizer fallbacks.

Without apex or Transformer Engine, megatron-core computes the gradient norm with
``megatron.core.utils.local_multi_tensor_l2_norm``, which builds ``torch.tensor([norm_0, norm_1, ...])`` from one
CUDA scalar per parameter: a host sync per parameter, every step. It also scales clipped gradients one tensor at a
time and builds a non-fused ``torch.optim.AdamW``. The replacements below do the same arithmetic with PyTorch's
multi-tensor (``_foreach``) kernels and the fused AdamW kernel; results are equal to rounding.

Dividing the summed gradients by the step's token count (``finalize_model_grads`` -> ``scale_gradients``) runs
``grad_data *= factor`` with a 0-dim CUDA tensor: a broadcast operand, so PyTorch takes its strided elementwise
kernel (5.3 ms per 1B step on an H100, a third of the copy bandwidth); :func:`scale_grad_buffer` computes the same
products with the vectorised multi-tensor kernel.

megatron-core's gradient clipping also asserts fp32 gradients; :func:`clip_grad_by_total_norm` lets the bf16
gradients of ``mixed_precision='bf16_pure'`` through (same arithmetic) and leaves fp32 ones to megatron-core.
"""

from __future__ import annotations

from typing import Any

import torch


def foreach_l2_norm(chunk_size: int, noop_flag: torch.Tensor, tensor_lists: list, per_tensor: bool, *args: Any):
    """Drop-in for ``amp_C.multi_tensor_l2norm``: the L2 norm over all tensors of ``tensor_lists[0]``, no host sync."""
    tensors = tensor_lists[0]
    if not tensors:
        return torch.zeros(1, dtype=torch.float), None
    norms = torch._foreach_norm(tensors, 2, dtype=torch.float32)  # bf16 grads (bf16_pure): fp32 sums of squares
    return torch.linalg.vector_norm(torch.stack(norms).float()).reshape(1), None


def foreach_scale(chunk_size: int, noop_flag: torch.Tensor, tensor_lists: list, scale: float) -> None:
    """Drop-in for ``amp_C.multi_tensor_scale``: ``dst = src * scale`` for every pair, in one multi-tensor call."""
    src, dst = tensor_lists[0], tensor_lists[1]
    if not src:
        return
    if all(s is d for s, d in zip(src, dst)):
        torch._foreach_mul_(dst, scale)
    else:
        torch._foreach_copy_(dst, torch._foreach_mul(src, scale))


def clip_grad_by_total_norm(parameters: Any, max_norm: float, total_norm: Any, use_decoupled_grad: bool = False):
    """megatron-core's ``clip_grad_by_total_norm_fp32``, also for bf16 ``.grad`` tensors (its version asserts fp32).

    Same rule: scale every gradient by ``max_norm / (total_norm + 1e-6)`` when that is below 1 (clamped at 1 when
    ``total_norm`` is a tensor, as megatron-core >= 0.19 allows).
    """
    from megatron.core.optimizer.clip_grads import clip_grad_by_total_norm_fp32

    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if use_decoupled_grad or all(g.dtype == torch.float32 for g in grads):
        return clip_grad_by_total_norm_fp32(params, max_norm, total_norm, use_decoupled_grad=use_decoupled_grad)
    coeff = max_norm / (total_norm + 1.0e-6)
    if isinstance(coeff, torch.Tensor):
        torch._foreach_mul_(grads, coeff.clamp(max=1.0))
    elif coeff < 1.0:
        torch._foreach_mul_(grads, coeff)


def install_bf16_grad_clipping() -> None:
    """Route megatron-core's optimizers (which import the clip function by name) through
    :func:`clip_grad_by_total_norm`; the original in ``clip_grads`` stays untouched for fp32 gradients."""
    from megatron.core.optimizer import optimizer as mcore_optimizer

    mcore_optimizer.clip_grad_by_total_norm_fp32 = clip_grad_by_total_norm


_SCALE_SPLIT = 2**30  # elements per multi-tensor operand: an 8B model's buffer stays far from int32 indexing


def scale_grad_buffer(buffer: Any, scaling_factor: float | torch.Tensor) -> None:
    """``buffer.grad_data *= scaling_factor`` (megatron-core's ``_ParamAndGradBuffer.scale_gradients``), bit for bit.

    On CUDA, an in-place product with a 0-dim tensor of another dtype loads the factor in the buffer's dtype (the
    kernel's operand type), so the factor is cast first and ``_foreach_mul_`` multiplies in fp32 as that kernel
    does; a GPU test checks the equality. Elsewhere (CPU rounds differently) the original product runs."""
    grad = buffer.grad_data
    if not (isinstance(scaling_factor, torch.Tensor) and grad.is_cuda and scaling_factor.device == grad.device):
        grad *= scaling_factor
        return
    torch._foreach_mul_(list(grad.view(-1).split(_SCALE_SPLIT)), scaling_factor.to(grad.dtype))


def install_vectorised_grad_scaling() -> None:
    """Route megatron-core's ``_ParamAndGradBuffer.scale_gradients`` through :func:`scale_grad_buffer`."""
    from megatron.core.distributed.param_and_grad_buffer import _ParamAndGradBuffer

    _ParamAndGradBuffer.scale_gradients = scale_grad_buffer


def install_foreach_fallbacks() -> bool:
    """Swap megatron's local (per-tensor) grad-norm/scale fallbacks for the vectorised ones above.

    Only acts when megatron-core is using its local fallbacks (no apex, no TE). Returns True when it swapped.
    """
    import megatron.core.optimizer.clip_grads as clip_grads
    from megatron.core import utils as mutils

    if getattr(clip_grads, "l2_norm_impl", None) is not getattr(mutils, "local_multi_tensor_l2_norm", object()):
        return clip_grads.l2_norm_impl is foreach_l2_norm
    clip_grads.l2_norm_impl = foreach_l2_norm
    clip_grads.multi_tensor_scale_impl = foreach_scale
    return True


def _torch_optimizers(optimizer: Any):
    """The ``torch.optim`` objects inside a megatron optimizer (chained, mixed-precision or distributed)."""
    for sub in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(sub, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            yield inner


def use_fused_adamw(optimizer: Any) -> int:
    """Switch every torch Adam/AdamW inside ``optimizer`` to the fused CUDA kernel; returns how many it switched.

    megatron-core builds torch's AdamW with default flags (the foreach path) when apex/TE are absent. The fused
    kernel does the same update in one launch per dtype/device group. CPU runs are left as they are.
    """
    if not torch.cuda.is_available():
        return 0
    switched = 0
    for opt in _torch_optimizers(optimizer):
        if not isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        params = [p for g in opt.param_groups for p in g["params"]]
        if not all(p.is_cuda and p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params):
            continue
        for group in opt.param_groups:
            group["fused"], group["foreach"] = True, False
        opt.defaults["fused"], opt.defaults["foreach"] = True, False
        opt._step_supports_amp_scaling = True
        switched += 1
    return switched
