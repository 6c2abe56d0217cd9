"""Model FLOPs per step, counted on real tokens (the convention Bridge's published TFLOP/s use).

    FLOPs = 6 * N_matmul * tokens  +  6 * L * (heads * head_dim) * sum_i s_i^2

``N_matmul`` counts the weights of every matrix multiply a token passes through (QKV, output projection, MLP,
LM head; with MoE only the ``topk`` routed experts), ``6 = 2 (multiply-add) x 3 (forward + 2 backward)``, and
the second term is causal attention over the real sub-sequence lengths ``s_i`` (packed documents count
separately, padding not at all). Example: Llama-3-8B at s=4096 gives about 48.2 GFLOP per token.
"""

from __future__ import annotations

from typing import Any

PEAK_TFLOPS_BF16 = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "B200": 2250.0, "GB200": 2500.0}
"""Dense bf16 tensor-core peaks per GPU (TFLOP/s), used for MFU."""


def matmul_params(config: Any, vocab_size: int) -> int:
    """Weights touched per token by matrix multiplies, from a megatron TransformerConfig (global, not per TP rank)."""
    h = config.hidden_size
    heads = config.num_attention_heads
    head_dim = config.kv_channels or h // heads
    groups = config.num_query_groups or heads
    attn = h * head_dim * (heads + 2 * groups) + heads * head_dim * h
    ffn = config.ffn_hidden_size or 4 * h
    glu = 2 if getattr(config, "gated_linear_unit", False) else 1
    if getattr(config, "num_moe_experts", None):
        ffn = getattr(config, "moe_ffn_hidden_size", None) or ffn
        experts = getattr(config, "moe_router_topk", 1) + (1 if getattr(config, "moe_shared_expert_intermediate_size", None) else 0)
        mlp = experts * (h * ffn * glu + ffn * h) + h * config.num_moe_experts
    else:
        mlp = h * ffn * glu + ffn * h
    return config.num_layers * (attn + mlp) + h * vocab_size


def step_flops(
    config: Any, vocab_size: int, num_tokens: int, seqlen_sq_sum: int, matmul_factor: int = 6
) -> float:
    """FLOPs of one optimizer step over ``num_tokens`` real tokens whose sub-sequence lengths square-sum to
    ``seqlen_sq_sum``. ``matmul_factor`` is 6 for full training and 4 for LoRA (frozen weights get no weight
    gradient; Bridge and NeMo count LoRA this way).

    >>> step_flops(cfg, vocab_size=128, num_tokens=32, seqlen_sq_sum=2 * 16**2)   # doctest: +SKIP
    """
    heads = config.num_attention_heads
    head_dim = config.kv_channels or config.hidden_size // heads
    attention = 6.0 * config.num_layers * heads * head_dim * seqlen_sq_sum
    return float(matmul_factor) * matmul_params(config, vocab_size) * num_tokens + attention


def peak_tflops() -> float | None:
    """bf16 peak of this rank's GPU, or None (CPU or an unknown GPU: no MFU is reported)."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key in sorted(PEAK_TFLOPS_BF16, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS_BF16[key]
    return None
