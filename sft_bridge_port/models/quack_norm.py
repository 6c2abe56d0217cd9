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
micro-batch (bench/NOTES.md, round 5).
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


@functools.cache
def _quack_rmsnorm() -> Callable[..., torch.Tensor]:
    from quack.rmsnorm import rmsnorm

    return rmsnorm


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._quack_runs(x):
            return _quack_rmsnorm()(x, self.weight, eps=self.eps)
        return super().forward(x)
