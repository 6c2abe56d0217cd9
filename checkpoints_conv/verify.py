"""Run the HF model and the converted megatron model on the same tokens and compare their logits.

Both models run in fp32 on the CPU by default, so what is measured is the conversion, not bf16 kernel noise.
The gate follows what users rely on: per-position cosine similarity of the logits and identical greedy
next tokens at every position; the max-abs difference is reported, not gated (it grows with logit scale).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from checkpoints_conv.exporter import load_provider, stored_embedding
from checkpoints_conv.hf_io import read_config, resolve_hf_folder, tokenizer_files

DEFAULT_PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


@dataclasses.dataclass
class VerifyResult:
    """Outcome of :func:`verify`. ``ok`` is what the CLI's exit code reports."""

    num_tokens: int
    max_abs_diff: float
    min_cosine: float
    mean_cosine: float
    greedy_agreement: float
    min_cosine_required: float

    @property
    def ok(self) -> bool:
        return self.min_cosine >= self.min_cosine_required and self.greedy_agreement == 1.0

    def __str__(self) -> str:
        return (
            f"tokens={self.num_tokens} max_abs_logit_diff={self.max_abs_diff:.3e} "
            f"cosine(min/mean)={self.min_cosine:.6f}/{self.mean_cosine:.6f} "
            f"greedy_next_token_agreement={self.greedy_agreement:.4f} -> {'PASS' if self.ok else 'FAIL'} "
            f"(needs cosine >= {self.min_cosine_required} and all greedy tokens equal)"
        )


def sample_tokens(hf_folder: Path, megatron_iter: Path | None, vocab_size: int, prompt: str | None, length: int = 24) -> torch.Tensor:
    """``[1, s]`` token ids: the prompt through the checkpoint's tokenizer, else seeded random ids."""
    for folder in ([megatron_iter / "tokenizer"] if megatron_iter else []) + [hf_folder]:
        if tokenizer_files(folder):
            from transformers import AutoTokenizer

            ids = AutoTokenizer.from_pretrained(str(folder))(prompt or DEFAULT_PROMPT)["input_ids"]
            ids = [i for i in ids if i < vocab_size]
            if len(ids) >= 2:
                return torch.tensor([ids])
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_size, (1, length), generator=gen)


def compare_logits(a: torch.Tensor, b: torch.Tensor, min_cosine: float) -> VerifyResult:
    """Compare ``[b, s, V]`` logits position by position (fp64 for the metrics)."""
    a, b = a.double().flatten(0, 1), b.double().flatten(0, 1)  # [positions, V]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return VerifyResult(
        num_tokens=a.shape[0],
        max_abs_diff=float((a - b).abs().max()),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        greedy_agreement=float((a.argmax(-1) == b.argmax(-1)).double().mean()),
        min_cosine_required=min_cosine,
    )


def megatron_logits(megatron_path: str | os.PathLike, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits ``[1, s, padded V]`` of a Megatron checkpoint, rebuilt at TP=1/PP=1 in a world of one."""
    from checkpoints_conv.model_io import build_tp1_model
    from sft_bridge_port.utils.ckpt_layout import resolve_checkpoint
    from sft_bridge_port.utils.dist_ckpt import load_model_weights
    from sft_bridge_port.utils.dist_context import parallel_context

    iter_dir, _ = resolve_checkpoint(megatron_path)
    provider = load_provider(iter_dir)
    rows, stored = stored_embedding(iter_dir)
    with parallel_context(1, 1, backend="gloo"):
        model = build_tp1_model(provider, rows, stored)
        load_model_weights([model], iter_dir, strict=True)
        model = model.to(dtype).eval()
        positions = torch.arange(tokens.shape[1]).unsqueeze(0)
        with torch.no_grad():
            return model(tokens, positions, attention_mask=None).float()


def hf_logits(hf_folder: str | os.PathLike, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logits ``[1, s, V]`` of the HF model (transformers, eager attention, no remote code)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(hf_folder), dtype=dtype, trust_remote_code=False, attn_implementation="eager")
    with torch.no_grad():
        return model(input_ids=tokens).logits.float()


def verify(
    hf_path: str | os.PathLike,
    megatron_path: str | os.PathLike,
    prompt: str | None = None,
    min_cosine: float = 0.9999,
    dtype: torch.dtype = torch.float32,
) -> VerifyResult:
    """Compare an HF model with a Megatron checkpoint of it on the same tokens.

    Returns:
        A :class:`VerifyResult`; ``result.ok`` is False when the cosine is below ``min_cosine`` at some
        position or a greedy next token differs.
    """
    from sft_bridge_port.utils.ckpt_layout import resolve_checkpoint

    folder = resolve_hf_folder(hf_path)
    vocab = int(read_config(folder)["vocab_size"])
    iter_dir, _ = resolve_checkpoint(megatron_path)
    tokens = sample_tokens(folder, iter_dir, vocab, prompt)
    mg = megatron_logits(megatron_path, tokens, dtype)[..., :vocab]
    hf = hf_logits(folder, tokens, dtype)
    if mg.shape != hf.shape:
        raise ValueError(f"logit shapes differ: megatron {tuple(mg.shape)} vs HF {tuple(hf.shape)}")
    return compare_logits(mg, hf, min_cosine)
