"""Probe (round 7): every GEMM of a 1B step, cuBLAS (``torch.mm``) against quack's autotuned CuTe GEMM.

    python bench/scripts/probe_gemm_shapes.py    # on the GPU, with quack-kernels installed (bench/scripts/fa4_env.sh)

GEMMs are ~330 of the ~445 ms of a 1×8 1B step (bench/NOTES.md, findings 11 and 18); a few per cent on one shape
is worth as much as a fused elementwise kernel. Shapes: Llama-3.2-1B (h 2048, F 8192, q+k+v 3072) at 32768 tokens
(one 1×8 micro-batch), the LM head per 4096-token chunk of a 128256 vocabulary. Forward ``x @ W.T``, input
gradient ``dy @ W``, weight gradient ``dy.T @ x`` accumulated into a bf16 ``main_grad`` (``bf16_pure``). Per
shape: GPU ms per call (CUDA events over 20 calls) and TFLOP/s of each, and the quack/cuBLAS time ratio.
"""

from __future__ import annotations

import time

import torch

T, H, F, QKV, V, CHUNK = 32768, 2048, 8192, 3072, 128256, 4096


def _ms(fn, iters: int = 20) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _cases() -> list[tuple[str, int, int, int, str]]:
    """(name, tokens, in, out, kind) for kind in fwd / dgrad / wgrad."""
    layers = [("qkv", T, H, QKV), ("proj", T, H, H), ("fc2", T, F, H), ("head", CHUNK, H, V)]
    kinds = ("fwd", "fwd+res", "dgrad", "wgrad")  # fc2's input gradient is quack's already (gemm_dgated)
    skip = {("fc2", "dgrad"), ("qkv", "fwd+res"), ("head", "fwd+res")}  # fwd+res: the residual add in the epilogue
    return [(f"{n} {k}", t, i, o, k) for n, t, i, o in layers for k in kinds if (n, k) not in skip]


def _time_case(t: int, i: int, o: int, kind: str) -> dict[str, float]:
    """GPU ms per call of one GEMM for cuBLAS and quack (the tensors are freed on return)."""
    from quack.gemm_interface import gemm, gemm_add, gemm_add_inplace

    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    x, w, dy = torch.randn(t, i, **bf16), torch.randn(o, i, **bf16) / i**0.5, torch.randn(t, o, **bf16)
    acc = torch.zeros(o, i, **bf16)
    if kind == "fwd":
        runs = {"cublas": lambda: torch.mm(x, w.t()), "quack": lambda: gemm(x, w.t())}
    elif kind == "fwd+res":  # what the layer pays now: the GEMM, then a separate residual add
        res = torch.randn(t, o, **bf16)
        runs = {"cublas fwd, add": lambda: torch.mm(x, w.t()).add_(res), "cublas": lambda: torch.addmm(res, x, w.t()),
                "quack": lambda: gemm_add(x, w.t(), res)}  # fmt: skip
    elif kind == "dgrad":
        runs = {"cublas": lambda: torch.mm(dy, w), "quack": lambda: gemm(dy, w)}
    else:
        runs = {"cublas": lambda: acc.addmm_(dy.t(), x),
                "quack": lambda: gemm_add_inplace(dy.t(), x, acc, dynamic_scheduler=True)}  # fmt: skip
    return {system: _ms(fn) for system, fn in runs.items()}


def main() -> None:
    began = time.perf_counter()
    print(f"torch {torch.__version__} {torch.cuda.get_device_name()}", flush=True)
    total = {"cublas": 0.0, "quack": 0.0}
    for name, t, i, o, kind in _cases():
        ms = _time_case(t, i, o, kind)
        for system in total:  # the step runs each layer GEMM 16 times, the head chunk 8 times
            total[system] += 0.0 if kind == "fwd+res" else ms[system] * (8 if name.startswith("head") else 16)
        flop = 2.0 * t * i * o
        row = "  ".join(f"{s} {v:7.3f} ms {flop / v / 1e9:6.1f} TFLOP/s" for s, v in ms.items())
        print(f"{name:12s} {row}  quack/cublas {ms['quack'] / ms['cublas']:.3f}  "
              f"({time.perf_counter() - began:.0f} s)", flush=True)  # fmt: skip
    print(f"per step (these GEMMs, 1x8): cublas {total['cublas']:.1f} ms, quack {total['quack']:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
