"""Tiny random HF checkpoints for tests, the demo and conversion checks (no hub, seconds on a CPU).

``make_tiny_hf_model(tmp, "qwen3")`` writes ``config.json`` + ``model.safetensors`` of a 2-layer model whose
shapes exercise what matters (GQA, head_dim ≠ hidden/heads for Qwen3, tied embeddings for ``llama_tied``,
QKV bias for Qwen2, llama3 RoPE scaling for Llama, a sliding window for Mistral).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

# Shared by the data, model, loss and conversion tests: 2 layers, 4 query heads over 2 KV groups.
TINY_LLAMA: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 128},
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
}

_FAMILY_OVERRIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("llama", {}),
    "llama_tied": ("llama", {"tie_word_embeddings": True}),
    "qwen2": ("qwen2", {"rope_scaling": None, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6}),
    "qwen3": ("qwen3", {"rope_scaling": None, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "head_dim": 32}),
    "mistral": ("mistral", {"rope_scaling": None, "rope_theta": 10000.0, "sliding_window": 4096}),
}
FAMILIES = tuple(_FAMILY_OVERRIDES)


def tiny_hf_config(family: str = "llama", **overrides: Any):
    """A transformers ``PretrainedConfig`` for a tiny model of ``family`` (see ``FAMILIES``)."""
    from transformers import AutoConfig

    if family not in _FAMILY_OVERRIDES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {FAMILIES}")
    model_type, family_overrides = _FAMILY_OVERRIDES[family]
    values = {**TINY_LLAMA, **family_overrides, **overrides}
    if values.get("rope_scaling") is None:
        values.pop("rope_scaling", None)
    return AutoConfig.for_model(model_type, **values)


def make_tiny_hf_model(
    out_dir: str | os.PathLike,
    family: str = "llama",
    vocab_size: int = TINY_LLAMA["vocab_size"],
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> Path:
    """Random-init a tiny HF causal LM and ``save_pretrained`` it (safetensors) into ``out_dir``.

    Returns:
        ``out_dir`` as a Path (holds config.json and model.safetensors).
    """
    from transformers import AutoModelForCausalLM

    config = tiny_hf_config(family, vocab_size=vocab_size, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return out
