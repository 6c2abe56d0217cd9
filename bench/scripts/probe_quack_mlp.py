"""Probe (round 6): the SwiGLU MLP with SwiGLU in quack's GEMM epilogues against megatron-core's MLP.

    python bench/scripts/probe_quack_mlp.py    # on the GPU, with quack-kernels installed (bench/scripts/fa4_env.sh)

One MLP layer, bf16, forward + backward with the weight gradients accumulated into ``main_grad`` (megatron DDP's
``gradient_accumulation_fusion``, fp32 as in ``bf16_mixed`` and bf16 as in ``bf16_pure``). Shapes: Llama-3.2-1B
(h 2048, F 8192) at 32768 tokens (one 1×8 micro-batch) and 8192 tokens, Llama-3-8B (h 4096, F 14336) at 8192 tokens.
Per path: GPU ms per call (its CUDA kernels summed by torch.profiler) and wall ms per call; first the largest
|fused - megatron| of the output and the three gradients relative to megatron's largest value.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from bench.scripts.probe_flash_cute import gpu_ms
from sft_bridge_port.models.layer_spec import get_fast_layer_spec
from sft_bridge_port.models.provider import GPTModelProvider
from sft_bridge_port.utils.dist_context import parallel_context


def _mlp(hidden: int, ffn: int) -> torch.nn.Module:
    provider = GPTModelProvider(
        num_layers=1, hidden_size=hidden, ffn_hidden_size=ffn, num_attention_heads=32, vocab_size=128,
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, bias_activation_fusion=True,
        gradient_accumulation_fusion=True, params_dtype=torch.bfloat16, bf16=True,
    )  # fmt: skip
    provider.finalize()
    spec = get_fast_layer_spec().submodules.mlp
    if hasattr(spec, "submodules"):
        from megatron.core.transformer.spec_utils import build_module

        return build_module(spec, config=provider, ffn_hidden_size=ffn).cuda()
    from megatron.core.process_groups_config import ProcessGroupCollection

    return spec(config=provider, pg_collection=ProcessGroupCollection.use_mpu_process_groups(), is_mtp_layer=False,
                ffn_hidden_size=ffn).cuda()  # fmt: skip


def _case(tokens: int, hidden: int, ffn: int, main_grad_dtype: torch.dtype):
    from sft_bridge_port.models.fused_ops import install_grad_accum_fusion

    install_grad_accum_fusion()
    mlp = _mlp(hidden, ffn)
    weights = (mlp.linear_fc1.weight, mlp.linear_fc2.weight)
    for w in weights:
        w.main_grad = torch.zeros(w.shape, dtype=main_grad_dtype, device="cuda")
        w.grad_added_to_main_grad = False
    x = torch.randn(tokens, 1, hidden, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)

    def run(kernel: str):
        def call():
            mlp.config.mlp_kernel = kernel
            out, _ = mlp(x)
            out.backward(grad)
            return out

        return call

    def results(kernel: str) -> list[torch.Tensor]:
        for w in weights:
            w.main_grad.zero_()
        x.grad = None
        out = run(kernel)()
        return [out.detach(), x.grad.clone(), *(w.main_grad.clone() for w in weights)]

    ref, got = results("torch"), results("quack")
    errors = " ".join(
        f"{name} {((g.float() - r.float()).abs().max() / r.float().abs().max()).item():.2e}"
        for name, r, g in zip(("out", "dx", "dw1", "dw2"), ref, got)
    )
    return run, errors


def main() -> None:
    start = time.perf_counter()
    print(f"torch {torch.__version__} {torch.cuda.get_device_name()}", flush=True)
    with parallel_context():
        for label, args in (
            ("1B 32768 tokens, fp32 main_grad", (32768, 2048, 8192, torch.float32)),
            ("1B 32768 tokens, bf16 main_grad", (32768, 2048, 8192, torch.bfloat16)),
            ("1B 8192 tokens, bf16 main_grad", (8192, 2048, 8192, torch.bfloat16)),
            ("8B 8192 tokens, fp32 main_grad", (8192, 4096, 14336, torch.float32)),
        ):  # fmt: skip
            run, errors = _case(*args)
            print(f"== {label}: relative max error fused vs megatron: {errors}", flush=True)
            print(f"   (incl. quack JIT/autotune: {time.perf_counter() - start:.1f} s since start)", flush=True)
            for kernel in ("torch", "quack"):
                call = run(kernel)
                for _ in range(3):
                    call()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(10):
                    call()
                torch.cuda.synchronize()
                wall = (time.perf_counter() - t0) / 10 * 1e3
                print(f"   {kernel:6s} GPU {gpu_ms(call):7.3f} ms  wall {wall:7.3f} ms per fwd+bwd", flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
