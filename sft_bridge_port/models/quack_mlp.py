"""SwiGLU MLP with the activation inside the GEMMs (quack's ``gemm_gated`` / ``gemm_dgated``), when installed.

megatron-core's MLP runs ``fc1 -> SwiGLU -> fc2`` as two GEMMs and a separate elementwise kernel each way: the
forward reads the ``[tokens, 2F]`` fc1 output and writes ``[tokens, F]``, the backward reads the fc2 input
gradient and the fc1 output again and writes ``[tokens, 2F]``. At the memory's bandwidth that was 27 ms of a
465 ms 1B step on an H100 (bench/NOTES.md, finding 15), the largest item left after the GEMMs and attention.
quack (Tri Dao's CuTe-DSL kernels; ``pip install quack-kernels``, which flash-attn-4 brings) computes SwiGLU in the
epilogue of the fc1 GEMM (forward) and of the fc2 input-gradient GEMM (backward), while the tile is still in
registers. Its ``concat_layout`` reads megatron's ``[gate; up]`` fc1 weight as it is stored, so parameter names,
shapes and checkpoints do not change.

:class:`QuackableMLP` *is* megatron-core's ``MLP`` (same submodules, same state dict) and takes the fused path
only where it is the same computation: tensor-parallel size 1, SwiGLU without biases, clamps or offsets, fc1/fc2
are megatron's own linear layers without forward hooks (a LoRA adapter on either keeps megatron's path), bf16/fp16
on a Hopper/Blackwell GPU. ``GPTModelProvider.mlp_kernel`` chooses: ``"auto"`` (default; from
``AUTO_MIN_TOKENS`` tokens per call, like the other quack/FA4 kernels), ``"quack"`` (required: a clear error where
it cannot run), ``"torch"`` (megatron's path). Weight gradients follow megatron's ``gradient_accumulation_fusion``
protocol (accumulated into ``main_grad``). The fused layer also keeps less: its input and the fc1 output, not the
SwiGLU output (the backward's epilogue recomputes it). Not bit-equal to megatron's path: the forward applies
SwiGLU to the fp32 accumulator before rounding (relative max error of output and gradients ≤ 6.4e-3, GPU probe).
Measured: 465 -> 443-451 ms and 59 -> 51 GiB per 1B step of 32768 tokens on an H100 (bench/NOTES.md, round 6).
quack autotunes each GEMM shape on first use (~150 s for the 1B shapes; cached on disk per machine).
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.mlp import MLP

from sft_bridge_port.models.flash_cute import check_choice, declined
from sft_bridge_port.models.fused_ops import dummy_wgrad, main_grad_target
from sft_bridge_port.models.quack_norm import quack_installed, quack_refusal

KERNELS = ("auto", "quack", "torch")
_SWIGLU = "swiglu"


def check_mlp_kernel(kernel: str) -> None:
    """:func:`~sft_bridge_port.models.flash_cute.check_choice` for ``mlp_kernel``."""
    hint = "pip install quack-kernels (or flash-attn-4, which depends on it)"
    check_choice("mlp_kernel", kernel, KERNELS, "quack", quack_installed(), hint)


@functools.cache
def quack_gemms() -> types.SimpleNamespace:
    """quack's four GEMM entry points the fused MLP uses (imported on first use: they load the CuTe compiler)."""
    from quack.gemm_interface import gemm, gemm_add_inplace, gemm_dgated, gemm_gated

    return types.SimpleNamespace(gemm=gemm, gemm_add_inplace=gemm_add_inplace, gated=gemm_gated, dgated=gemm_dgated)


def _fc1_weight_grad(ops: types.SimpleNamespace, weight: torch.Tensor, dpreact: torch.Tensor, x: torch.Tensor,
                     fuse: bool) -> torch.Tensor | None:
    """``dpreact.T @ x`` in megatron's ``[gate; up]`` row order (``dpreact``'s columns are gate/up interleaved)."""
    main_grad = main_grad_target(weight, fuse)
    if main_grad is None:
        return ops.gemm(dpreact.t(), x, concat_layout=("out",), out_dtype=weight.dtype, dynamic_scheduler=True)
    ops.gemm_add_inplace(dpreact.t(), x, main_grad, concat_layout=("C", "out"), dynamic_scheduler=True)
    return dummy_wgrad(weight, x.dtype)


def _fc2_weight_grad(ops: types.SimpleNamespace, weight: torch.Tensor, dout: torch.Tensor, postact: torch.Tensor,
                     fuse: bool) -> torch.Tensor | None:
    """``dout.T @ postact``; into ``main_grad`` on quack's GEMM (1.55 vs cuBLAS's 1.59 ms at the 1B shape, round 7)."""
    main_grad = main_grad_target(weight, fuse)
    if main_grad is None:
        return torch.mm(dout.t(), postact)
    ops.gemm_add_inplace(dout.t(), postact, main_grad, dynamic_scheduler=True)
    return dummy_wgrad(weight, postact.dtype)


class GatedMLPFunction(torch.autograd.Function):
    """``fc2(silu(gate) * up)`` with ``[gate; up] = fc1(x)``; 2-D ``x [tokens, h]``, ``w1 [2F, h]``, ``w2 [h, F]``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, fuse_wgrad: bool) -> torch.Tensor:
        ops = quack_gemms()
        keep = any(ctx.needs_input_grad[:3])
        # preact: [tokens, 2F] with gate/up columns interleaved (quack's gated layout); postact: [tokens, F]
        preact, postact = ops.gated(x, w1.t(), activation=_SWIGLU, concat_layout=("B",), store_preact=keep)
        out = torch.mm(postact, w2.t())
        ctx.save_for_backward(x, w1, w2, preact)
        ctx.fuse_wgrad = fuse_wgrad
        return out

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        ops = quack_gemms()
        x, w1, w2, preact = ctx.saved_tensors
        dout = dout.contiguous()
        # dpreact = dSwiGLU(dout @ w2) from preact, and postact again, in one GEMM's epilogue
        dpreact, postact = ops.dgated(dout, w2, preact, activation=_SWIGLU, dynamic_scheduler=True)
        del preact
        gw2 = _fc2_weight_grad(ops, w2, dout, postact, ctx.fuse_wgrad) if ctx.needs_input_grad[2] else None
        del postact
        dx = ops.gemm(dpreact, w1, concat_layout=("B",), dynamic_scheduler=True) if ctx.needs_input_grad[0] else None
        gw1 = _fc1_weight_grad(ops, w1, dpreact, x, ctx.fuse_wgrad) if ctx.needs_input_grad[1] else None
        return dx, gw1, gw2, None


class QuackableMLP(MLP):
    """megatron-core's ``MLP`` whose SwiGLU runs in quack's GEMM epilogues where it can (module doc)."""

    def _structure_fits(self) -> str | None:
        """Why this layer cannot take the fused path regardless of its input (None when it can)."""
        cfg = self.config
        fc1, fc2 = self.linear_fc1, self.linear_fc2
        checks = (
            (cfg.gated_linear_unit and self.activation_func is F.silu, "the activation is not SwiGLU"),
            (not cfg.add_bias_linear and fc1.bias is None and fc2.bias is None, "fc1/fc2 have biases"),
            (getattr(cfg, "activation_func_clamp_value", None) is None and not getattr(cfg, "glu_linear_offset", 0.0),
             "SwiGLU has a clamp or an offset"),
            (cfg.tensor_model_parallel_size == 1 and not cfg.sequence_parallel, "tensor parallelism is on"),
            (type(fc1) is ColumnParallelLinear and type(fc2) is RowParallelLinear,
             "fc1/fc2 are not megatron-core's local linear layers"),
            (not (fc1._forward_hooks or fc1._forward_pre_hooks or fc2._forward_hooks or fc2._forward_pre_hooks),
             "fc1/fc2 carry forward hooks (e.g. LoRA adapters)"),
            (getattr(cfg, "fp8", None) is None and getattr(cfg, "fp4", None) is None
             and not getattr(cfg, "delay_wgrad_compute", False), "fp8/fp4 or delayed weight gradients are on"),
        )  # fmt: skip
        return next((why for ok, why in checks if not ok), None)

    def _fused_runs(self, x: torch.Tensor) -> bool:
        kernel = getattr(self.config, "mlp_kernel", "auto")
        if declined(kernel, "torch", x.numel() // x.shape[-1]):
            return False
        w1 = self.linear_fc1.weight
        why = self._structure_fits() or quack_refusal(x, w1)
        if why is None and (x.shape[-1] % 8 or w1.shape[0] % 16):
            why = f"hidden size {x.shape[-1]} / fc1 width {w1.shape[0]} are not multiples of 8 / 16"
        if kernel == "quack" and why is not None:
            raise RuntimeError(f"mlp_kernel='quack' but the fused SwiGLU MLP cannot run here: {why}; "
                               "set mlp_kernel='auto' to fall back to megatron-core's MLP")  # fmt: skip
        return why is None

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any):
        per_token_scale = args[0] if args else kwargs.get("per_token_scale")
        if per_token_scale is not None or not self._fused_runs(hidden_states):
            return super().forward(hidden_states, *args, **kwargs)
        x = hidden_states.reshape(-1, hidden_states.shape[-1])
        fuse = bool(self.config.gradient_accumulation_fusion)
        out = GatedMLPFunction.apply(x, self.linear_fc1.weight, self.linear_fc2.weight, fuse)
        return out.view(*hidden_states.shape[:-1], out.shape[-1]), None
