"""Model FLOPs of one training step, counted on real tokens, for MFU (the formula every row of bench/ uses).

The arithmetic is the training engine's (``sft_bridge_port.training.flops``), so logged MFU and benchmark MFU agree.

    FLOPs = k * N_matmul * T  +  6 * L * (heads * head_dim) * sum_i s_i^2

- ``N_matmul``: weights every token multiplies by (Q, K, V, output projection, MLP, LM head; the embedding
  lookup is no matmul). Llama-3.2-1B: 1.2357e9.
- ``T``: real (non-padding) tokens of the step; ``s_i``: the real length of each packed document.
- ``k = 6`` for full training (2 forward + 2 activation-gradient + 2 weight-gradient FLOPs per weight);
  ``k = 4`` for LoRA (frozen base weights get no weight gradient; the small adapters are not counted).
- The second term is causal attention: ``QK^T`` and ``PV`` cost ``4·s²·d`` per layer forward, halved by the
  causal mask and tripled for forward + backward. Documents packed into one row count separately, so the
  work a document-causal kernel may skip is not credited.

Example (2 layers, hidden 8, 2 heads / 1 KV head of dim 4, FFN 16 gated, vocab 10, documents of 3 and 5
tokens): N_matmul = 2·(8·4·(2+2) + 2·4·8 + 3·8·16) + 8·10 = 1232, so full training costs
6·1232·8 + 6·2·8·(9+25) = 59136 + 3264 = 62400 FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Sequence

from sft_bridge_port.training import flops as engine_flops

PEAK_TFLOPS_BF16 = engine_flops.PEAK_TFLOPS_BF16["H100"]
"""Dense bf16 tensor-core peak of an H100 SXM (and H200), TFLOP/s: the MFU denominator."""


@dataclass(frozen=True)
class Dims:
    """The shape numbers the FLOP count needs (global, not per tensor-parallel rank)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    gated: bool = True

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> "Dims":
        """From an HF ``config.json`` dict (Llama / Qwen / Mistral families)."""
        heads = cfg["num_attention_heads"]
        return cls(
            layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            ffn=cfg["intermediate_size"], vocab=cfg["vocab_size"],
        )  # fmt: skip

    def as_model_config(self) -> SimpleNamespace:
        """The TransformerConfig fields the training engine's FLOP count reads (one formula for both)."""
        return SimpleNamespace(
            num_layers=self.layers, hidden_size=self.hidden, num_attention_heads=self.heads,
            num_query_groups=self.kv_heads, kv_channels=self.head_dim, ffn_hidden_size=self.ffn,
            gated_linear_unit=self.gated,
        )  # fmt: skip


def matmul_params(d: Dims) -> int:
    """Weights touched by matrix multiplies per token (attention + MLP of every layer, plus the LM head)."""
    return engine_flops.matmul_params(d.as_model_config(), d.vocab)


def step_flops(d: Dims, doc_lengths: Sequence[int], mode: str = "sft") -> float:
    """FLOPs of one step over documents of ``doc_lengths`` real tokens (see the module docstring)."""
    if mode not in ("sft", "lora"):
        raise ValueError(f"mode must be 'sft' or 'lora', got {mode!r}")
    return engine_flops.step_flops(
        d.as_model_config(), d.vocab, sum(doc_lengths), sum(n * n for n in doc_lengths),
        matmul_factor=6 if mode == "sft" else 4,
    )  # fmt: skip


def mfu(flops_per_s: float, peak_tflops: float = PEAK_TFLOPS_BF16) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the bf16 peak."""
    return flops_per_s / (peak_tflops * 1e12)
