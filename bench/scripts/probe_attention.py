"""Probe (round 3): packed causal attention of the Llama-3.2-1B shape, forward + backward, by kernel.

    python bench/scripts/probe_attention.py      # on the GPU; prints one line per kernel: ms per call or the error

Documents of two 4096-token packs (bench.stream), 32 query heads, 8 KV heads, head_dim 64, bf16. Compares
torch's ``varlen_attn`` (FA2, what SDPAttention uses) with SDPA over a jagged nested tensor under the cuDNN and flash
backends (GQA by ``enable_gqa`` or by repeating K/V heads).
"""

from __future__ import annotations

import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.stream import join_packs, make_packs

H, KV, D = 32, 8, 64


def timed(fn, iters: int = 20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters * 1e3


def report(cases: dict, width: int, iters: int = 20, per_call: str = "ms", scale: float = 1.0) -> None:
    """One line per case: its time per call (``timed`` ms x ``scale``), or the error that case raised."""
    for name, fn in cases.items():
        try:
            print(f"{name:{width}s} {timed(fn, iters) * scale:8.3f} {per_call} fwd+bwd", flush=True)
        except Exception as exc:  # a backend that refuses these inputs says why
            print(f"{name:{width}s} error: {type(exc).__name__}: {str(exc)[:300]}", flush=True)


def attention_inputs(tokens: int) -> tuple[torch.Tensor, ...]:
    """Random packed q ``[t, H, D]``, k/v ``[t, KV, D]`` (bf16, requiring grad) and an output gradient."""
    shapes = ((tokens, H, D), (tokens, KV, D), (tokens, KV, D))
    q, k, v = (torch.randn(s, device="cuda", dtype=torch.bfloat16, requires_grad=True) for s in shapes)
    return q, k, v, torch.randn(tokens, H, D, device="cuda", dtype=torch.bfloat16)


def main() -> None:
    pack = join_packs(make_packs(2, 4096, 1000))
    cu = torch.tensor([0, *torch.tensor(pack.lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    t, max_len = int(cu[-1]), max(pack.lengths)
    q, k, v, grad = attention_inputs(t)
    print(f"torch {torch.__version__} cudnn {torch.backends.cudnn.version()} docs {len(pack.lengths)} tokens {t}", flush=True)

    def varlen():
        from torch.nn.attention.varlen import varlen_attn

        from sft_bridge_port.models.attention import _varlen_kwargs

        names = _varlen_kwargs()
        kwargs = {"window_size": (-1, 0)} if "window_size" in names else {"is_causal": True}
        out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)
        out.backward(grad)

    def njt(backend, gqa: bool):
        offsets = cu.long()

        def nested(x):
            return torch.nested.nested_tensor_from_jagged(x, offsets, max_seqlen=max_len).transpose(1, 2)

        def run():
            kk, vv = (k, v) if gqa else (k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1))
            with sdpa_kernel(backend):
                out = torch.nn.functional.scaled_dot_product_attention(
                    nested(q), nested(kk), nested(vv), is_causal=True, enable_gqa=gqa
                )
            out.transpose(1, 2).values().backward(grad)

        return run

    cases = {"varlen_attn (FA2, ours)": varlen}
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
        cases[f"sdpa njt {name} enable_gqa"] = njt(backend, True)
        cases[f"sdpa njt {name} repeat kv"] = njt(backend, False)
    report(cases, width=32)


if __name__ == "__main__":
    main()
