"""Probe (round 4): host time per call of the per-layer pieces, on inputs too small for the GPU to matter.

    python bench/scripts/probe_host_overhead.py      # on the GPU; one line per case: microseconds per fwd+bwd call

At one 4096-token pack per micro-batch a 1B step was host-bound (bench/NOTES.md, round 4); each layer calls attention,
RoPE and SwiGLU once per micro-batch, forward and backward. The tensors here are tiny, so the time per call is what
the host spends dispatching it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.scripts.probe_attention import report
from sft_bridge_port.models.attention import _varlen_kwargs
from sft_bridge_port.models.flash_varlen import flash_varlen
from sft_bridge_port.models.rope import apply_rotary_pair, apply_rotary_pair_fused


def main() -> None:
    from megatron.core.fusions.fused_bias_swiglu import bias_swiglu_impl
    from torch.nn.attention.varlen import varlen_attn

    dev, bf16 = "cuda", torch.bfloat16
    t, h, kv, d = 64, 4, 2, 64
    q = torch.randn(t, h, d, device=dev, dtype=bf16, requires_grad=True)
    k = torch.randn(t, kv, d, device=dev, dtype=bf16, requires_grad=True)
    v = torch.randn(t, kv, d, device=dev, dtype=bf16, requires_grad=True)
    cu = torch.tensor([0, 20, 64], dtype=torch.int32, device=dev)
    cos, sin = (torch.randn(t, 1, d, device=dev, dtype=bf16) for _ in range(2))
    x = torch.randn(t, 2 * 128, device=dev, dtype=bf16, requires_grad=True)

    names = _varlen_kwargs() or frozenset()
    varlen_kwargs = {"enable_gqa": True} if "enable_gqa" in names else {}  # torch 2.11 takes GQA without the flag
    varlen_kwargs.update({"window_size": (-1, 0)} if "window_size" in names else {"is_causal": True})

    def backward(out):
        out.sum().backward()

    def pair(rotate):
        q_rot, k_rot = rotate(q, k, cos, sin)
        return q_rot.sum() + k_rot.sum()

    cases = {
        "attention: varlen_attn (custom op)": lambda: backward(varlen_attn(q, k, v, cu, cu, 64, 64, **varlen_kwargs)),
        "attention: flash_varlen (direct aten)": lambda: backward(flash_varlen(q, k, v, cu, cu, 64, 64)),
        "rope q+k: compiled (apply_rotary_pair_fused)": lambda: backward(pair(apply_rotary_pair_fused)),
        "rope q+k: eager (apply_rotary_pair)": lambda: backward(pair(apply_rotary_pair)),
        "swiglu: megatron bias_swiglu_impl (compiled)": lambda: backward(bias_swiglu_impl(x, None)),
        "swiglu: eager silu(a) * b": lambda: backward(F.silu(x[:, :128]) * x[:, 128:]),
    }
    print(f"torch {torch.__version__}", flush=True)
    report(cases, width=46, iters=300, per_call="us per", scale=1e3)


if __name__ == "__main__":
    main()
