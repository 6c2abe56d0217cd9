"""PyTorch stand-ins for the apex kernels megatron-core's fusions need, so the fusion switches work without apex.

``gradient_accumulation_fusion=True`` makes megatron's linear layers write each weight gradient straight into the
fp32 ``main_grad`` buffer of megatron DDP (``main_grad += grad_output.T @ input``) instead of producing a bf16
``weight.grad`` that DDP's hook then adds in a separate pass over the parameters. megatron-core calls apex's
``fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32`` for it and refuses the switch when apex is absent.
:func:`install_grad_accum_fusion` gives megatron-core's linear layers an implementation on ``torch.addmm``: with
torch >= 2.8 one cuBLAS GEMM of bf16 inputs accumulating into the fp32 buffer (``out_dtype``), otherwise a GEMM plus
an add (same values, no fusion).

Like apex's, it needs megatron DDP (which creates ``main_grad``): a model built with ``wrap_with_ddp=False`` cannot
run backward with ``gradient_accumulation_fusion=True``.

Example::

    main_grad = torch.zeros(3, 2); x = torch.randn(5, 2); g = torch.randn(5, 3)
    wgrad_gemm_accum(x, g, main_grad)          # main_grad == g.T @ x
"""

from __future__ import annotations

import types

import torch

_MIXED_GEMM_OK: dict[tuple[str, torch.dtype, torch.dtype], bool] = {}


def wgrad_gemm_accum(total_input: torch.Tensor, grad_output: torch.Tensor, main_grad: torch.Tensor) -> None:
    """``main_grad += grad_output.T @ total_input`` (2-D ``[tokens, in]``, ``[tokens, out]``, ``[out, in]``).

    The product accumulates in ``main_grad``'s dtype (fp32 for Bridge's ``bf16_mixed``), not in bf16.
    """
    x = total_input.reshape(-1, total_input.shape[-1])
    g = grad_output.reshape(-1, grad_output.shape[-1])
    if main_grad.dtype == g.dtype:
        main_grad.addmm_(g.t(), x)
        return
    key = (main_grad.device.type, g.dtype, main_grad.dtype)
    if _MIXED_GEMM_OK.get(key, True):
        try:
            torch.addmm(main_grad, g.t(), x, out_dtype=main_grad.dtype, out=main_grad)
            _MIXED_GEMM_OK[key] = True
            return
        except (RuntimeError, TypeError, NotImplementedError):  # this torch/device has no mixed-dtype addmm
            _MIXED_GEMM_OK[key] = False
    main_grad.add_(torch.mm(g.t(), x))


def main_grad_target(weight: torch.Tensor, fuse: bool) -> torch.Tensor | None:
    """``weight.main_grad`` when a fused layer should accumulate its weight gradient there (megatron DDP created it
    and ``gradient_accumulation_fusion`` is on), else None (the layer returns an ordinary gradient)."""
    main_grad = getattr(weight, "main_grad", None) if fuse else None
    return main_grad if isinstance(main_grad, torch.Tensor) and hasattr(weight, "grad_added_to_main_grad") else None


def dummy_wgrad(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """What autograd gets for a weight whose gradient is already in ``main_grad`` (megatron's fused-linear protocol).

    A weight shared with another layer on this stage (``zero_out_wgrad``, e.g. an LM head tied to the embedding):
    nothing, so the leaf's gradient is the other use's alone and DDP adds it. Otherwise an uninitialised placeholder
    plus ``grad_added_to_main_grad``, so DDP's hook fires (bucket bookkeeping) but adds nothing.
    """
    if getattr(weight, "zero_out_wgrad", False):
        return None
    weight.grad_added_to_main_grad = True
    return torch.empty(weight.shape, dtype=dtype, device=weight.device)


def wgrad_accumulator(weight: torch.Tensor, fuse: bool) -> torch.Tensor:
    """Where a chunked layer sums its weight gradient: :func:`main_grad_target`, else a zeroed buffer (fp32 for
    bf16/fp16 weights). Hand it to :func:`accumulated_wgrad` for what the backward returns."""
    main_grad = main_grad_target(weight, fuse)
    if main_grad is not None:
        return main_grad
    dtype = torch.float32 if weight.dtype in (torch.bfloat16, torch.float16) else weight.dtype
    return torch.zeros(weight.shape, dtype=dtype, device=weight.device)


def accumulated_wgrad(weight: torch.Tensor, acc: torch.Tensor, input_dtype: torch.dtype) -> torch.Tensor | None:
    """The weight's gradient for autograd once ``acc`` (from :func:`wgrad_accumulator`) holds the sum."""
    if acc is getattr(weight, "main_grad", None):
        return dummy_wgrad(weight, input_dtype)
    return acc.to(weight.dtype)


def install_grad_accum_fusion() -> bool:
    """Let megatron-core's ``gradient_accumulation_fusion`` run on :func:`wgrad_gemm_accum` when apex is absent.

    Returns True when megatron-core's linear layers can now use the fusion (apex's kernel or ours).
    """
    from megatron.core.tensor_parallel import layers

    if getattr(layers, "_grad_accum_fusion_available", False):
        return True
    layers.fused_weight_gradient_mlp_cuda = types.SimpleNamespace(
        wgrad_gemm_accum_fp32=wgrad_gemm_accum, wgrad_gemm_accum_fp16=wgrad_gemm_accum
    )
    layers._grad_accum_fusion_available = True
    return True
