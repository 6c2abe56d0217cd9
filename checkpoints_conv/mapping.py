"""The vocabulary of the per-architecture tables: a ``Row`` per parameter, a ``Table`` per architecture, and
``ModelShape``, the handful of numbers a table needs to compute shapes.

A row is written once, in the HF -> megatron-core direction; export walks the same rows backwards.
``*`` in a name stands for the layer index::

    Row("decoder.layers.*.mlp.linear_fc2.weight", "model.layers.*.mlp.down_proj.weight",
        dims=("hidden_size", "ffn_hidden_size"), tp_axis=1)
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Any

KINDS = ("direct", "qkv", "gate_up", "vocab")


@dataclasses.dataclass(frozen=True)
class Row:
    """One megatron-core parameter and the HF tensor(s) it is made of.

    Attributes:
        mcore: megatron-core name (local layer spec); ``*`` = layer index.
        hf: HF name, or several for fused rows (``qkv``: q, k, v; ``gate_up``: gate, up).
        dims: the full (unsharded) megatron shape as ``ModelShape`` attribute names.
        kind: ``direct`` (copy), ``qkv`` (interleave by query group), ``gate_up`` ([gate; up]),
            ``vocab`` (pad rows to the padded vocab size; stripped on export).
        tp_axis: 0 column-parallel, 1 row-parallel, None replicated.
        when: a boolean ``ModelShape`` attribute that must be true for the row to exist (e.g. ``untied``).
    """

    mcore: str
    hf: str | tuple[str, ...]
    dims: tuple[str, ...]
    kind: str = "direct"
    tp_axis: int | None = None
    when: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.hf, str):
            object.__setattr__(self, "hf", (self.hf,))
        assert self.kind in KINDS, f"unknown row kind {self.kind!r}"
        want = {"qkv": 3, "gate_up": 2}.get(self.kind, 1)
        assert len(self.hf) == want, f"{self.mcore}: kind {self.kind} needs {want} HF names"

    @property
    def per_layer(self) -> bool:
        return "*" in self.mcore

    def mcore_name(self, layer: int | None = None) -> str:
        return self.mcore.replace("*", str(layer)) if self.per_layer else self.mcore

    def hf_names(self, layer: int | None = None) -> tuple[str, ...]:
        return tuple(n.replace("*", str(layer)) if self.per_layer else n for n in self.hf)


@dataclasses.dataclass(frozen=True)
class Table:
    """A mapping table: the HF architectures it serves, its rows, and HF tensors that are safe to drop."""

    name: str
    architectures: tuple[str, ...]
    rows: tuple[Row, ...]
    ignored_hf: tuple[str, ...] = ("*.rotary_emb.inv_freq",)

    def is_ignored(self, hf_name: str) -> bool:
        return any(fnmatch.fnmatchcase(hf_name, p) for p in self.ignored_hf)


def padded_vocab_size(vocab_size: int, divisible_by: int, tp_size: int) -> int:
    """Megatron's vocab padding: round up to a multiple of ``divisible_by * tp_size``.

    Example: ``padded_vocab_size(1001, 128, 2) == 1024``; ``padded_vocab_size(1001, 1, 1) == 1001``.
    """
    multiple = max(1, divisible_by) * tp_size
    return int(math.ceil(vocab_size / multiple) * multiple)


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The geometry a table needs, read from a provider (``ModelShape.from_provider``)."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_groups: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    padded_vocab_size: int
    tied: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False

    @property
    def untied(self) -> bool:
        return not self.tied

    @property
    def q_rows(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def qkv_rows(self) -> int:
        return (self.num_heads + 2 * self.num_groups) * self.head_dim

    @property
    def fc1_rows(self) -> int:
        return 2 * self.ffn_hidden_size

    @classmethod
    def from_provider(cls, provider: Any, padded_vocab: int | None = None) -> "ModelShape":
        """Read a megatron ``TransformerConfig``/``GPTModelProvider``; ``padded_vocab`` defaults to the
        provider's own padding for its tensor-parallel size."""
        heads = provider.num_attention_heads
        vocab = int(provider.vocab_size)
        if padded_vocab is None:
            padded_vocab = provider_padded_vocab(provider, provider.tensor_model_parallel_size)
        return cls(
            num_layers=provider.num_layers,
            hidden_size=provider.hidden_size,
            num_heads=heads,
            num_groups=provider.num_query_groups or heads,
            head_dim=provider.kv_channels or provider.hidden_size // heads,
            ffn_hidden_size=provider.ffn_hidden_size,
            vocab_size=vocab,
            padded_vocab_size=padded_vocab,
            tied=bool(provider.share_embeddings_and_output_weights),
            qkv_bias=bool(getattr(provider, "add_qkv_bias", False)),
            qk_norm=bool(getattr(provider, "qk_layernorm", False)),
        )


def provider_padded_vocab(provider: Any, tp_size: int) -> int:
    """The embedding rows a provider builds at ``tp_size`` (Bridge: padded only when ``should_pad_vocab``)."""
    if not getattr(provider, "should_pad_vocab", True):
        return int(provider.vocab_size)
    return padded_vocab_size(int(provider.vocab_size), int(getattr(provider, "make_vocab_size_divisible_by", 1)), tp_size)


def shape_from_hf_config(cfg: dict, padded_vocab: int | None = None) -> ModelShape:
    """``ModelShape`` straight from an HF config.json dict (used to cross-check the provider and in tests).

    Example: Llama-3.2-1B -> 16 layers, hidden 2048, 32 heads, 8 groups, head_dim 64, ffn 8192, tied.
    """
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    arch = (cfg.get("architectures") or [""])[0]
    return ModelShape(
        num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=hidden,
        num_heads=heads,
        num_groups=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        ffn_hidden_size=int(cfg["intermediate_size"]),
        vocab_size=int(cfg["vocab_size"]),
        padded_vocab_size=int(padded_vocab or cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=arch == "Qwen2ForCausalLM" or bool(cfg.get("attention_bias", False)),
        qk_norm=arch == "Qwen3ForCausalLM",
    )
