"""Probe (round 5): flash-attention 4 (``flash_attn.cute``) against PyTorch's FA2 on packed causal attention.

    python bench/scripts/probe_flash_cute.py    # on the GPU, with flash-attn-4 installed (bench/scripts/fa4_env.sh)

Documents of 4096-token packs (bench.stream), bf16, forward + backward per call. Shapes: Llama-3.2-1B (32 query
heads, 8 KV heads, head_dim 64; one and two packs) and Llama-3-8B (32/8, head_dim 128); then a 256-token call, whose
time is mostly host work (Python and launches). Per kernel: wall ms per call (host-bound when small) and GPU ms per
call (the sum of its CUDA kernels, from torch.profiler). First prints the largest |FA4 - FA2| of the output and the
grads relative to FA2's largest value, so a fast wrong kernel cannot pass unnoticed.
"""

from __future__ import annotations

import time

import torch

from bench.scripts.probe_attention import report
from bench.stream import join_packs, make_packs
from sft_bridge_port.models.flash_cute import cute_varlen
from sft_bridge_port.models.flash_varlen import flash_varlen


def _case(packs: int, heads: int, kv: int, dim: int, tokens: int | None = None):
    pack = join_packs(make_packs(packs, 4096, 1000))
    lengths = pack.lengths if tokens is None else [tokens]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    t, max_len = int(cu[-1]), max(lengths)
    shapes = ((t, heads, dim), (t, kv, dim), (t, kv, dim))
    q, k, v = (torch.randn(s, device="cuda", dtype=torch.bfloat16, requires_grad=True) for s in shapes)
    grad = torch.randn(t, heads, dim, device="cuda", dtype=torch.bfloat16)

    def run(fn):
        def call():
            out = fn(q, k, v, cu, cu, max_len, max_len)
            out.backward(grad)
            return out

        return call

    return run, (q, k, v, grad), len(lengths)


def _errors(run, tensors) -> str:
    q, k, v, _ = tensors
    results = []
    for fn in (flash_varlen, cute_varlen):
        for x in (q, k, v):
            x.grad = None
        out = run(fn)()
        results.append([out.detach()] + [x.grad.clone() for x in (q, k, v)])
    parts = []
    for name, ref, got in zip(("out", "dq", "dk", "dv"), *results):
        parts.append(f"{name} {((got.float() - ref.float()).abs().max() / ref.float().abs().max()).item():.2e}")
    return " ".join(parts)


def gpu_ms(fn, iters: int = 10) -> float:
    """CUDA kernel time per call: what the call costs the GPU however slow the host is."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / iters / 1e3


def main() -> None:
    start = time.perf_counter()
    print(f"torch {torch.__version__} {torch.cuda.get_device_name()}", flush=True)
    for label, args in (
        ("1B 1 pack", (1, 32, 8, 64)), ("1B 2 packs", (2, 32, 8, 64)), ("8B 1 pack", (1, 32, 8, 128)),
        ("1B 256 tokens (host)", (1, 32, 8, 64, 256)),
    ):  # fmt: skip
        run, tensors, docs = _case(*args)
        print(f"== {label}: {docs} documents; relative max error FA4 vs FA2: {_errors(run, tensors)}", flush=True)
        print(f"   (first FA4 calls incl. JIT compile: {time.perf_counter() - start:.1f} s since start)", flush=True)
        cases = {"fa2 (torch, direct)": run(flash_varlen), "fa4 (flash_attn.cute)": run(cute_varlen)}
        report(cases, width=24)
        for name, fn in cases.items():
            print(f"{name:24s} {gpu_ms(fn):8.3f} ms GPU (kernels) per fwd+bwd", flush=True)


if __name__ == "__main__":
    main()
