"""Packed causal attention on flash-attention 4's CuTe-DSL kernels (``flash_attn.cute``), when they are installed.

PyTorch ships flash-attention **2**, written for Ampere: on an H100 its varlen backward was the largest non-GEMM item
of a 1B step (73 of ~505 ms; bench/NOTES.md, finding 11). Flash-attention 4 (``pip install flash-attn-4``, pure
Python over NVIDIA's CuTe DSL, JIT-compiled on first use) has Hopper (SM90) and Blackwell (SM100) kernels with
TMA/wgmma pipelines. It is an optional extra: nothing imports it unless it is installed, and every other GPU keeps
PyTorch's FA2 (:mod:`~sft_bridge_port.models.flash_varlen`).

``GPTModelProvider.attention_kernel`` picks the kernel: ``"auto"`` (default: FA4 where :func:`cute_supported`
says it runs and a micro-batch holds at least :data:`AUTO_MIN_TOKENS` tokens, else FA2), ``"fa4"`` (FA4 or a clear
error), ``"fa2"`` (always PyTorch's kernels). The token floor is measured: FA4's Python launch path costs ~0.4 ms
more host time per forward+backward than FA2's, which a 1B step at one 4096-token pack per micro-batch cannot hide
(527 -> 630 ms per step), while at 8192 tokens and more the GPU time it saves wins (506 -> 485 ms; bench/NOTES.md,
round 5).

Both follow flash-attention's conventions, so a caller can swap them: ``[t, heads, d]`` packed tensors, documents
delimited by ``cu_seqlens``, causal masking aligned to the end of each key sequence when a document has fewer
queries than keys (context parallelism), a sliding window of ``left`` keys back.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Callable

import torch

KERNELS = ("auto", "fa4", "fa2")
INSTALL_HINT = "pip install flash-attn-4 (it pulls nvidia-cutlass-dsl)"
AUTO_MIN_TOKENS = 8192  # "auto" uses FA4 / quack from this many tokens per call (see the module docstring)
_ARCH_MAJORS = (9, 10)  # Hopper, Blackwell datacenter parts: FA4's tuned paths; elsewhere FA2 is as good


@functools.cache
def module_installed(name: str) -> bool:
    """Whether module ``name`` can be found, without importing it (CuTe-DSL packages load their compiler)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # e.g. a 'flash_attn' package without submodules, or a broken one
        return False


def cute_installed() -> bool:
    """Whether flash-attention 4's ``flash_attn.cute`` is installed."""
    return module_installed("flash_attn.cute")


@functools.cache
def _cute_varlen() -> Callable[..., Any]:
    from flash_attn.cute import flash_attn_varlen_func

    return flash_attn_varlen_func


@functools.cache
def _device_major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def cute_arch(tensor: torch.Tensor) -> int | None:
    """The compute-capability major of the tensor's GPU when CuTe-DSL kernels are tuned for it (9 Hopper, 10
    Blackwell), else None (CPU tensors, other GPUs)."""
    if not tensor.is_cuda:
        return None
    major = _device_major(tensor.device.index if tensor.device.index is not None else torch.cuda.current_device())
    return major if major in _ARCH_MAJORS else None


def cute_supported(query: torch.Tensor, value_dim: int) -> bool:
    """FA4 runs here: installed, a Hopper/Blackwell GPU, bf16/fp16, head dims FA4 compiles (8..128 in steps of 8;
    SM90 also to 256)."""
    if not (query.dtype in (torch.bfloat16, torch.float16) and cute_installed()):
        return False
    major = cute_arch(query)
    limit = 256 if major == 9 else 128
    return major is not None and all(8 <= d <= limit and d % 8 == 0 for d in (query.shape[-1], value_dim))


def declined(kernel: str, fallback: str, tokens: int) -> bool:
    """Whether a kernel field keeps the PyTorch/megatron path for a call of ``tokens`` tokens: ``fallback`` chosen,
    or ``"auto"`` below :data:`AUTO_MIN_TOKENS` (one policy for attention, RMSNorm and the MLP)."""
    return kernel == fallback or (kernel == "auto" and tokens < AUTO_MIN_TOKENS)


def check_choice(field: str, value: str, kernels: tuple[str, ...], required: str, installed: bool, hint: str) -> None:
    """Refuse an unknown kernel name in ``GPTModelProvider.<field>``, and ``required`` (the value that demands the
    optional package) without the package, before a model is built."""
    if value not in kernels:
        raise ValueError(f"GPTModelProvider.{field} must be one of {kernels}, got {value!r}")
    if value == required and not installed:
        raise ValueError(
            f"GPTModelProvider.{field}={required!r} needs a package that is not installed: {hint}, or set "
            f"{field}='auto' to fall back to PyTorch's kernels"
        )


def check_kernel_choice(kernel: str) -> None:
    """:func:`check_choice` for ``attention_kernel``."""
    check_choice("attention_kernel", kernel, KERNELS, "fa4", cute_installed(), INSTALL_HINT)


def cute_varlen(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q: torch.Tensor, cu_k: torch.Tensor, max_q: int,
    max_k: int, scale: float | None = None, left: int | None = None,
) -> torch.Tensor:
    """Same contract as :func:`~sft_bridge_port.models.flash_varlen.flash_varlen`, on FA4's kernels."""
    out, _ = _cute_varlen()(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k,
        softmax_scale=scale, causal=True, window_size=(left, 0) if left is not None else (None, None),
    )  # fmt: skip
    return out
