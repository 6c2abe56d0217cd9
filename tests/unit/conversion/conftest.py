"""Tiny random HF models of every supported family, created on the fly (no hub access).

Each spec exercises one thing the conversion must get right: tied embeddings (Llama 3.2 style), q/k/v bias
(Qwen2), QK-norm (Qwen3), GQA with 2 KV groups for 4 heads, and odd vocab sizes that need padding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

COMMON = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=64, rms_norm_eps=1e-6, rope_theta=10000.0,
)
FAMILIES = {
    "llama_tied": ("LlamaConfig", dict(vocab_size=97, tie_word_embeddings=True)),
    "llama": ("LlamaConfig", dict(vocab_size=100, tie_word_embeddings=False)),
    # Llama 3.1/3.2 configs all carry llama3 RoPE scaling (exercises the provider's exact RoPE, also on ``meta``).
    "llama31": ("LlamaConfig", dict(vocab_size=98, tie_word_embeddings=False, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "qwen2": ("Qwen2Config", dict(vocab_size=101, tie_word_embeddings=False)),
    "qwen3": ("Qwen3Config", dict(vocab_size=103, head_dim=8, tie_word_embeddings=False)),
    "mistral": ("MistralConfig", dict(vocab_size=99, tie_word_embeddings=False, sliding_window=None, head_dim=8)),
}


def make_hf_model(out_dir: Path, family: str, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> Path:
    """Save a tiny random model of ``family`` (a key of FAMILIES) to ``out_dir`` and return it.

    Every parameter is random (norms around 1, biases non-zero) so a transposed or swapped tensor shows up.
    """
    import transformers

    cls_name, extra = FAMILIES[family]
    cfg = getattr(transformers, cls_name)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "norm" in name else 0.0
            p.copy_(base + 0.2 * torch.randn_like(p))
    model.to(dtype).save_pretrained(out_dir)
    return Path(out_dir)


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """Every family saved once per test session: ``{"llama_tied": Path, ...}``."""
    root = tmp_path_factory.mktemp("hf_models")
    return {fam: make_hf_model(root / fam, fam) for fam in FAMILIES}


def save_tiny_tokenizer(out_dir: Path, vocab_limit: int = 90) -> Path:
    """A word-level tokenizer (< ``vocab_limit`` ids) trained on a few sentences, saved HF-style."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    text = ["The capital of France is Paris .", "The capital of Germany is Berlin .", "The capital of Italy is Rome ."]
    tok.train_from_iterator(text, trainers.WordLevelTrainer(vocab_size=vocab_limit, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out_dir)
    return Path(out_dir)


def hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF folder by name."""
    from checkpoints_conv.hf_io import SafetensorsReader, iter_state

    with SafetensorsReader(folder) as reader:
        return dict(iter_state(reader))


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same key set, dtypes and bits."""
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name
