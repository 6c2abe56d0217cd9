"""HF config.json <-> ``GPTModelProvider``: one table per architecture, applied by two small functions.

``provider_from_hf_config`` reads a config (dict or ``PretrainedConfig``) into provider fields;
``hf_config_from_provider`` writes config.json for export. ``get_provider`` finds the config offline: a local
HF folder, else the built-in table of public architectures, else transformers' hub code path.

Example::

    >>> p = provider_from_hf_config({"architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, ...})
    >>> p.add_qkv_bias, p.num_query_groups, p.hf_architecture
    (True, 2, 'Qwen2ForCausalLM')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sft_bridge_port.models.builtin_configs import public_config
from sft_bridge_port.models.provider import GPTModelProvider

# HF key -> provider field, shared by every supported architecture (plain copies both ways).
COMMON_FIELDS: dict[str, str] = {
    "num_hidden_layers": "num_layers",
    "hidden_size": "hidden_size",
    "intermediate_size": "ffn_hidden_size",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_query_groups",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "seq_length",
    "rms_norm_eps": "layernorm_epsilon",
    "initializer_range": "init_method_std",
    "tie_word_embeddings": "share_embeddings_and_output_weights",
    "attention_dropout": "attention_dropout",
}

# Provider fields every supported family shares (pre-norm, RMSNorm, SwiGLU, RoPE, no linear biases).
COMMON_PROVIDER: dict[str, Any] = {
    "normalization": "RMSNorm",
    "gated_linear_unit": True,
    "activation_func": F.silu,
    "position_embedding_type": "rope",
    "add_bias_linear": False,
    "hidden_dropout": 0.0,
    # megatron's TransformerConfig defaults to 0.1; the HF families train without attention dropout, and a
    # missing "attention_dropout" key in config.json means 0.0 there.
    "attention_dropout": 0.0,
    "should_pad_vocab": True,
    "make_vocab_size_divisible_by": 128,
}


@dataclass(frozen=True)
class Family:
    """What distinguishes one HF architecture: its model_type and the provider fields it fixes."""

    model_type: str
    provider: dict[str, Any] = field(default_factory=dict)
    hf_defaults: dict[str, Any] = field(default_factory=dict)  # written on export
    bias_key: str | None = "attention_bias"  # HF key for q/k/v bias, None when fixed by the family


FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": Family("llama", hf_defaults={"mlp_bias": False, "pretraining_tp": 1}),
    "MistralForCausalLM": Family("mistral"),
    "Qwen2ForCausalLM": Family("qwen2", provider={"add_qkv_bias": True}, bias_key=None,
                               hf_defaults={"use_sliding_window": False}),
    "Qwen3ForCausalLM": Family("qwen3", provider={"qk_layernorm": True}, hf_defaults={"use_sliding_window": False}),
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def supported_architectures() -> list[str]:
    """HF architecture names ``provider_from_hf_config`` accepts."""
    return sorted(FAMILIES)


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, dict):
        return dict(cfg)
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    raise TypeError(f"expected a config.json dict or a transformers PretrainedConfig, got {type(cfg).__name__}")


def _architecture(cfg: dict[str, Any]) -> str:
    archs = cfg.get("architectures") or []
    if not archs:
        by_type = {fam.model_type: name for name, fam in FAMILIES.items()}
        if cfg.get("model_type") in by_type:
            return by_type[cfg["model_type"]]
    for arch in archs:
        if arch in FAMILIES:
            return arch
    raise ValueError(
        f"unsupported HF architecture {archs or cfg.get('model_type')!r}; supported: {supported_architectures()}"
    )


def _rope_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """``rope_theta`` + ``rope_scaling`` (transformers 4 keys) or ``rope_parameters`` (transformers 5)."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = params.get("rope_type", params.get("type", "default"))
    out: dict[str, Any] = {"rotary_base": float(theta), "rope_scaling": False}
    if rope_type == "llama3":
        out.update(
            rope_scaling=True,
            rope_scaling_factor=float(params["factor"]),
            rope_scaling_low_freq_factor=float(params.get("low_freq_factor", 1.0)),
            rope_scaling_high_freq_factor=float(params.get("high_freq_factor", 4.0)),
            rope_scaling_original_max_position_embeddings=int(params.get("original_max_position_embeddings", 8192)),
        )
    elif rope_type != "default":
        raise ValueError(f"rope type {rope_type!r} in config.json is not supported; supported: default, llama3")
    return out


def _window_fields(cfg: dict[str, Any], arch: str) -> dict[str, Any]:
    """Sliding-window attention: Mistral always honours ``sliding_window``; Qwen only with use_sliding_window."""
    window = cfg.get("sliding_window")
    if arch.startswith("Qwen"):
        if cfg.get("use_sliding_window"):
            raise ValueError(f"{arch} with use_sliding_window=true (per-layer windows) is not supported")
        window = None
    return {"window_size": (int(window) - 1, 0) if window else None}


def _dtype_fields(cfg: dict[str, Any]) -> dict[str, Any]:
    """Bridge takes params dtype and bf16/fp16 from config.json's dtype (``torch_dtype`` in older files)."""
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    dtype = _DTYPES.get(str(name).replace("torch.", ""), torch.float32)
    return {"params_dtype": dtype, "bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def provider_from_hf_config(cfg: Any, **overrides: Any) -> GPTModelProvider:
    """Build a provider from an HF config (dict or ``PretrainedConfig``); ``overrides`` set provider fields."""
    cfg = _as_dict(cfg)
    arch = _architecture(cfg)
    family = FAMILIES[arch]
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act={cfg['hidden_act']!r} is not supported for {arch}; expected 'silu'")
    if arch == "LlamaForCausalLM" and (cfg.get("attention_bias") or cfg.get("mlp_bias")):
        raise ValueError("LlamaForCausalLM with attention_bias/mlp_bias=true is not supported")
    fields: dict[str, Any] = {**COMMON_PROVIDER, **family.provider}
    fields.update({dst: cfg[src] for src, dst in COMMON_FIELDS.items() if cfg.get(src) is not None})
    fields.setdefault("num_query_groups", cfg["num_attention_heads"])
    fields["kv_channels"] = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if family.bias_key is not None:
        fields["add_qkv_bias"] = bool(cfg.get(family.bias_key, False))
    fields.update(_rope_fields(cfg), **_window_fields(cfg, arch), **_dtype_fields(cfg))
    fields.update(hf_architecture=arch, hf_model_id=cfg.get("_name_or_path") or None)
    unknown = sorted(set(overrides) - set(GPTModelProvider.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown GPTModelProvider field(s) in overrides: {unknown}")
    fields.update(overrides)
    return GPTModelProvider(**fields)


def hf_config_from_provider(provider: GPTModelProvider) -> dict[str, Any]:
    """config.json (as a dict) for exporting ``provider``'s model to HF format."""
    arch = provider.hf_architecture
    if arch not in FAMILIES:
        raise ValueError(
            f"provider.hf_architecture={arch!r} cannot be exported; supported: {supported_architectures()}"
        )
    family = FAMILIES[arch]
    cfg: dict[str, Any] = {"architectures": [arch], "model_type": family.model_type, "hidden_act": "silu"}
    cfg.update({src: getattr(provider, dst) for src, dst in COMMON_FIELDS.items()})
    heads = provider.num_attention_heads
    cfg["num_key_value_heads"] = provider.num_query_groups or heads
    cfg["head_dim"] = provider.kv_channels or provider.hidden_size // heads
    if family.bias_key is not None:
        cfg[family.bias_key] = bool(provider.add_qkv_bias)
    cfg["rope_theta"] = float(provider.rotary_base)
    cfg["rope_scaling"] = _hf_rope_scaling(provider)
    if family.model_type == "mistral":
        cfg["sliding_window"] = provider.window_size[0] + 1 if provider.window_size else None
    dtype = provider.params_dtype if isinstance(provider.params_dtype, torch.dtype) else torch.float32
    cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    cfg.update(family.hf_defaults)
    return cfg


def _hf_rope_scaling(provider: GPTModelProvider) -> dict[str, Any] | None:
    if not provider.rope_scaling:
        return None
    return {
        "rope_type": "llama3",
        "factor": float(provider.rope_scaling_factor),
        "low_freq_factor": float(provider.rope_scaling_low_freq_factor),
        "high_freq_factor": float(provider.rope_scaling_high_freq_factor),
        "original_max_position_embeddings": int(provider.rope_scaling_original_max_position_embeddings),
    }


def load_hf_config(hf_path_or_id: str | os.PathLike) -> dict[str, Any]:
    """config.json of a local HF folder, else the built-in public table, else transformers' AutoConfig."""
    path = Path(hf_path_or_id).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} is a folder but has no config.json; pass an HF model folder")
        return json.loads(config_file.read_text())
    builtin = public_config(str(hf_path_or_id))
    if builtin is not None:
        return {**builtin, "_name_or_path": str(hf_path_or_id)}
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(hf_path_or_id)).to_dict()
    except (OSError, ValueError) as err:
        raise ValueError(
            f"cannot read the config of {str(hf_path_or_id)!r}: not a local folder, not a built-in architecture, "
            f"and the hub lookup failed ({err}). Download the model folder and pass its path."
        ) from err


def get_provider(hf_path_or_id: str | os.PathLike, **overrides: Any) -> GPTModelProvider:
    """Provider for an HF folder or id, offline for local folders and built-in public ids.

    Example: ``get_provider("meta-llama/Llama-3.2-1B", seq_length=4096)``.
    """
    cfg = load_hf_config(hf_path_or_id)
    provider = provider_from_hf_config(cfg, **overrides)
    if "hf_model_id" not in overrides:
        provider.hf_model_id = str(hf_path_or_id)
    return provider
