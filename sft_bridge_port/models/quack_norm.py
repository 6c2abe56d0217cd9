"""RMSNorm on quack's CuTe-DSL kernels (``quack.rmsnorm``) when they are installed, else ``torch.nn.RMSNorm``.

PyTorch's fused RMSNorm backward runs a second kernel for the weight gradient (``GammaBetaBackward``): 80 µs per
``[8192, 2048]`` bf16 call on an H100, where reading ``x`` and ``dy`` and writing ``dx`` takes ~35 µs at the
memory's bandwidth (bench/NOTES.md, round 4 profile). quack (Tri Dao's kernel library, ``pip install quack-kernels``;
flash-attention 4 depends on it, so installing ``flash-attn-4`` brings it) does the backward in one pass with
per-SM fp32 weight-gradient partials. Same arithmetic (fp32 statistics, output in the input's dtype); not bit-equal.

:class:`QuackableRMSNorm` *is* a ``torch.nn.RMSNorm`` (same ``weight`` parameter and state dict; checkpoints and
conversion do not see a difference) that calls quack where it runs: a Hopper/Blackwell GPU, bf16/fp16 input, an
explicit ``eps``. ``GPTModelProvider.norm_kernel`` chooses: ``"auto"`` (default; from ``AUTO_MIN_TOKENS`` rows per
call, as for flash-attention 4: quack's launch path costs more host time than torch's), ``"quack"`` (required: a
clear error where it cannot run), ``"torch"``. Measured: 468.4 -> 465.1 ms per 1B step at 32768 tokens per
micro-batch (bench/NOTES.md, round 5). Where it runs it also takes the residual add that precedes it
(:class:`AddRMSNormFunction`, wired by models/residual_norm.py): 440.7 -> 435.3 ms (round 7).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from sft_bridge_port.models.flash_cute import check_choice, cute_arch, declined, module_installed

KERNELS = ("auto", "quack", "torch")


def quack_installed() -> bool:
    """Whether ``quack`` (quack-kernels) is installed."""
    return module_installed("quack")


def quack_refusal(x: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why quack's kernels cannot take ``x`` with ``weight`` here, or None: both bf16/fp16 of one dtype, quack
    installed, a Hopper/Blackwell GPU (the checks every quack-backed layer shares)."""
    if not (x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype and quack_installed()):
        return f"dtype {x.dtype} / weight {weight.dtype} (needs bf16/fp16 for both) or quack not installed"
    if cute_arch(x) is None:
        return f"device {x.device} is not a Hopper/Blackwell GPU"
    return None


@functools.cache
def _quack_rmsnorm() -> Callable[..., torch.Tensor]:
    from quack.rmsnorm import rmsnorm

    return rmsnorm


@functools.cache
def quack_add_rmsnorm_ops() -> tuple[Callable[..., None], Callable[..., tuple]]:
    """quack's RMSNorm forward (``x + residual`` in, sum and norm out) and backward (with the sum's gradient)."""
    from quack.rmsnorm import _rmsnorm_fwd, rmsnorm_bwd

    return _rmsnorm_fwd, rmsnorm_bwd


class AddRMSNormFunction(torch.autograd.Function):
    """``(rmsnorm(branch + residual), branch + residual)`` in one quack kernel each way (see models/residual_norm.py).

    The sum is taken in fp32 and normalised before it is rounded (megatron rounds the sum first); the backward
    writes ``norm'(dout) + dsum`` once, the gradient of both inputs. Outputs are fresh tensors, not views.
    """

    @staticmethod
    def forward(ctx, branch: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float):
        fwd, _ = quack_add_rmsnorm_ops()
        n = branch.shape[-1]
        out, summed = torch.empty_like(branch), torch.empty_like(residual)
        rstd = torch.empty(branch.numel() // n, dtype=torch.float32, device=branch.device)
        fwd(branch.contiguous().view(-1, n), weight, out.view(-1, n), None, rstd, None,
            residual.contiguous().view(-1, n), summed.view(-1, n), eps)  # fmt: skip
        ctx.save_for_backward(summed, weight, rstd)
        return out, summed

    @staticmethod
    def backward(ctx, dout: torch.Tensor, dsummed: torch.Tensor | None):
        _, bwd = quack_add_rmsnorm_ops()
        summed, weight, rstd = ctx.saved_tensors
        n = summed.shape[-1]
        dres = None if dsummed is None else dsummed.contiguous().view(-1, n)
        dx, dw, _, _ = bwd(summed.view(-1, n), weight, dout.contiguous().view(-1, n), rstd, dres, False, True)
        dx = dx.view(summed.shape)
        return dx, dx, dw, None


def check_norm_kernel(kernel: str) -> None:
    """:func:`~sft_bridge_port.models.flash_cute.check_choice` for ``norm_kernel``."""
    hint = "pip install quack-kernels (or flash-attn-4, which depends on it)"
    check_choice("norm_kernel", kernel, KERNELS, "quack", quack_installed(), hint)


class QuackableRMSNorm(torch.nn.RMSNorm):
    """``torch.nn.RMSNorm`` whose forward (and backward) run quack's kernels where they can."""

    def __init__(self, *args: Any, kernel: str = "auto", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kernel = kernel

    def _quack_runs(self, x: torch.Tensor) -> bool:
        if declined(self.kernel, "torch", x.numel() // x.shape[-1]):
            return False
        runs = (
            self.eps is not None and self.weight is not None and x.dtype in (torch.bfloat16, torch.float16)
            and quack_installed() and cute_arch(x) is not None
        )  # fmt: skip
        if self.kernel == "quack" and not runs:
            raise RuntimeError(
                f"norm_kernel='quack' but quack's RMSNorm cannot run here (device {x.device}, dtype {x.dtype}, "
                f"eps {self.eps}): it needs a Hopper/Blackwell GPU, bf16/fp16 input and an explicit eps; set "
                "norm_kernel='auto' to use PyTorch's kernel"
            )
        return runs

    def takes_residual(self, x: torch.Tensor, residual: torch.Tensor) -> bool:
        """Whether :meth:`add_and_normalize` can fold ``x + residual`` into this norm's kernel."""
        return residual.shape == x.shape and residual.dtype == x.dtype and self._quack_runs(x)

    def add_and_normalize(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``x + residual``, with its normalisation computed in the same kernel and kept for the next
        :meth:`forward` call on that very tensor (models/residual_norm.py)."""
        out, summed = AddRMSNormFunction.apply(x, residual, self.weight, self.eps)
        self._normalized = (summed, summed._version, out)
        return summed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, self._normalized = getattr(self, "_normalized", None), None
        if kept is not None and kept[0] is x and x._version == kept[1]:
            return kept[2]  # normalised with the residual add that produced x
        if self._quack_runs(x):
            return _quack_rmsnorm()(x, self.weight, eps=self.eps)
        return super().forward(x)
