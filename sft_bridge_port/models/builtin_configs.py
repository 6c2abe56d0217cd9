"""config.json values of the public checkpoints we support, so recipes build providers offline.

Each entry is the architecture-relevant part of the model's published ``config.json`` (family defaults plus
per-size values). ``get_provider("meta-llama/Llama-3.2-1B")`` reads it instead of calling the hub. Values
for Llama 3.1-8B, Llama 3.2-3B, Qwen2.5-{3B,7B,14B,32B}, Qwen3-{4B,8B,14B,32B} were cross-checked against
published config.json copies; the others follow the same published model cards.
"""

from __future__ import annotations

from typing import Any

_LLAMA3 = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_act": "silu",
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "num_key_value_heads": 8, "attention_bias": False,
    "mlp_bias": False, "initializer_range": 0.02, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "max_position_embeddings": 8192, "rope_scaling": None,
}
_LLAMA31 = {
    **_LLAMA3, "max_position_embeddings": 131072,
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}
_LLAMA32 = {**_LLAMA31, "tie_word_embeddings": True, "rope_scaling": {**_LLAMA31["rope_scaling"], "factor": 32.0}}
_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "initializer_range": 0.02, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "max_position_embeddings": 131072, "use_sliding_window": False,
}
_QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "head_dim": 128, "num_key_value_heads": 8,
    "attention_bias": False, "initializer_range": 0.02, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "max_position_embeddings": 40960, "use_sliding_window": False,
}
_MISTRAL = {
    "architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 32000, "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "initializer_range": 0.02,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "max_position_embeddings": 32768,
    "sliding_window": 4096,
}


def _size(layers: int, hidden: int, ffn: int, heads: int, **extra: Any) -> dict[str, Any]:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "intermediate_size": ffn,
            "num_attention_heads": heads, **extra}


_LLAMA_8B = _size(32, 4096, 14336, 32)
_LLAMA_70B = _size(80, 8192, 28672, 64)
_LLAMA_405B = _size(126, 16384, 53248, 128)

PUBLIC_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B": {**_LLAMA3, **_LLAMA_8B},
    "meta-llama/Meta-Llama-3-70B": {**_LLAMA3, **_LLAMA_70B},
    "meta-llama/Llama-3.1-8B": {**_LLAMA31, **_LLAMA_8B},
    "meta-llama/Llama-3.1-70B": {**_LLAMA31, **_LLAMA_70B},
    "meta-llama/Llama-3.1-405B": {**_LLAMA31, **_LLAMA_405B},
    "meta-llama/Llama-3.2-1B": {**_LLAMA32, **_size(16, 2048, 8192, 32, head_dim=64)},
    "meta-llama/Llama-3.2-3B": {**_LLAMA32, **_size(28, 3072, 8192, 24, head_dim=128)},
    "Qwen/Qwen2-0.5B": {**_QWEN2, **_size(24, 896, 4864, 14, num_key_value_heads=2, tie_word_embeddings=True)},
    "Qwen/Qwen2-1.5B": {**_QWEN2, **_size(28, 1536, 8960, 12, num_key_value_heads=2, tie_word_embeddings=True)},
    "Qwen/Qwen2-7B": {**_QWEN2, **_size(28, 3584, 18944, 28, num_key_value_heads=4, vocab_size=152064)},
    "Qwen/Qwen2-72B": {**_QWEN2, **_size(80, 8192, 29568, 64, num_key_value_heads=8, vocab_size=152064,
                                         rms_norm_eps=1e-5)},
    "Qwen/Qwen2.5-0.5B": {**_QWEN2, **_size(24, 896, 4864, 14, num_key_value_heads=2, tie_word_embeddings=True,
                                            max_position_embeddings=32768)},
    "Qwen/Qwen2.5-1.5B": {**_QWEN2, **_size(28, 1536, 8960, 12, num_key_value_heads=2, tie_word_embeddings=True)},
    "Qwen/Qwen2.5-3B": {**_QWEN2, **_size(36, 2048, 11008, 16, num_key_value_heads=2, tie_word_embeddings=True,
                                          max_position_embeddings=32768)},
    "Qwen/Qwen2.5-7B": {**_QWEN2, **_size(28, 3584, 18944, 28, num_key_value_heads=4, vocab_size=152064)},
    "Qwen/Qwen2.5-14B": {**_QWEN2, **_size(48, 5120, 13824, 40, num_key_value_heads=8, vocab_size=152064,
                                           rms_norm_eps=1e-5)},
    "Qwen/Qwen2.5-32B": {**_QWEN2, **_size(64, 5120, 27648, 40, num_key_value_heads=8, vocab_size=152064,
                                           rms_norm_eps=1e-5)},
    "Qwen/Qwen2.5-72B": {**_QWEN2, **_size(80, 8192, 29568, 64, num_key_value_heads=8, vocab_size=152064,
                                           rms_norm_eps=1e-5)},
    "Qwen/Qwen3-0.6B": {**_QWEN3, **_size(28, 1024, 3072, 16, tie_word_embeddings=True)},
    "Qwen/Qwen3-1.7B": {**_QWEN3, **_size(28, 2048, 6144, 16, tie_word_embeddings=True)},
    "Qwen/Qwen3-4B": {**_QWEN3, **_size(36, 2560, 9728, 32, tie_word_embeddings=True)},
    "Qwen/Qwen3-8B": {**_QWEN3, **_size(36, 4096, 12288, 32)},
    "Qwen/Qwen3-14B": {**_QWEN3, **_size(40, 5120, 17408, 40)},
    "Qwen/Qwen3-32B": {**_QWEN3, **_size(64, 5120, 25600, 64)},
    "mistralai/Mistral-7B-v0.1": dict(_MISTRAL),
    "mistralai/Mistral-7B-v0.3": {**_MISTRAL, "vocab_size": 32768, "rope_theta": 1000000.0, "sliding_window": None},
}

# Spellings used by Bridge's recipes and by the hub's renames.
ALIASES = {
    "meta-llama/Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-70B": "meta-llama/Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-405B": "meta-llama/Llama-3.1-405B",
    "meta-llama/Llama-3-8B": "meta-llama/Meta-Llama-3-8B",
    "meta-llama/Llama-3-70B": "meta-llama/Meta-Llama-3-70B",
}


def public_config(model_id: str) -> dict[str, Any] | None:
    """The built-in config.json dict for a public id (``-Instruct`` variants share the base's), else None."""
    key = ALIASES.get(model_id, model_id)
    if key not in PUBLIC_CONFIGS and key.endswith("-Instruct"):
        base = key[: -len("-Instruct")]
        key = ALIASES.get(base, base)
    cfg = PUBLIC_CONFIGS.get(key)
    return dict(cfg) if cfg is not None else None
