"""Llama 3 RoPE frequency scaling with all four HF parameters.

megatron-core's ``RotaryEmbedding(rope_scaling=True, rope_scaling_factor=f)`` (0.16 through 0.19) hard-codes
``low_freq_factor=1``, ``high_freq_factor=4`` and ``original_max_position_embeddings=8192``. Those are the
values of Llama 3.1 and 3.2, but a config.json may say otherwise, so the provider recomputes ``inv_freq`` with
the values it read. Same formula as transformers' ``_compute_llama3_parameters``::

    wavelen = 2π / inv_freq
    wavelen < orig / high            -> inv_freq              (high frequencies kept)
    wavelen > orig / low             -> inv_freq / factor     (low frequencies slowed down)
    otherwise                        -> smooth interpolation between the two
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch


def llama3_scaled_inv_freq(
    inv_freq: torch.Tensor,
    factor: float,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_position_embeddings: int = 8192,
) -> torch.Tensor:
    """Apply Llama 3 frequency scaling to unscaled RoPE inverse frequencies ``[dim/2]``."""
    if high_freq_factor <= low_freq_factor:
        raise ValueError(
            f"rope_scaling: high_freq_factor ({high_freq_factor}) must exceed low_freq_factor ({low_freq_factor})"
        )
    low_freq_wavelen = original_max_position_embeddings / low_freq_factor
    high_freq_wavelen = original_max_position_embeddings / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def base_inv_freq(head_dim: int, rotary_base: float, rotary_percent: float = 1.0) -> torch.Tensor:
    """Unscaled RoPE inverse frequencies, computed as megatron-core and transformers do (fp32)."""
    dim = int(head_dim * rotary_percent) if rotary_percent < 1.0 else head_dim
    return 1.0 / (rotary_base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


class RotaryTable:
    """RoPE applied inside the core attention, with cos/sin computed once per batch and shared by every layer.

    megatron-core applies RoPE to packed (THD) batches one document at a time (a Python loop with
    ``.tolist()`` and split/cat in every layer). Here each token's position inside its document is computed
    once from ``cu_seqlens`` on the device, and all layers reuse the same cos/sin tensors. The result is the
    one megatron-core and transformers compute (``x * cos + rotate_half(x) * sin`` with cos/sin cast to the
    activation dtype), for full and partial (``rotary_percent < 1``) rotary dimensions.

    Example: ``cu_seqlens = [0, 3, 5]`` gives positions ``[0, 1, 2, 0, 1]``.
    """

    def __init__(self, inv_freq: torch.Tensor, seq_len_interpolation_factor: float | None = None) -> None:
        self.inv_freq = inv_freq.detach().float()
        self.factor = seq_len_interpolation_factor
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def rot_dim(self) -> int:
        return 2 * self.inv_freq.numel()

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin ``[t, rot_dim]`` in ``dtype`` for integer ``positions [t]`` (computed in fp32)."""
        inv_freq = self.inv_freq.to(positions.device)
        pos = positions.float()
        if self.factor is not None:
            pos = pos / self.factor
        freqs = torch.outer(pos, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def for_length(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``[s, rot_dim]`` for positions ``0..s-1`` (unpacked batches), cached per shape."""
        key = (seq_len, device, dtype)
        if key not in self._cache:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = self.cos_sin(torch.arange(seq_len, device=device), dtype)
        return self._cache[key]


def packed_positions(cu_seqlens: torch.Tensor, total: int) -> torch.Tensor:
    """Position of every token inside its document, from cumulative lengths, without a host sync.

    >>> packed_positions(torch.tensor([0, 3, 5]), 5).tolist()
    [0, 1, 2, 0, 1]

    Tokens past ``cu_seqlens[-1]`` (trailing padding) continue counting from the last document's start.
    """
    cu = cu_seqlens.reshape(-1)
    idx = torch.arange(total, device=cu.device, dtype=cu.dtype)
    doc = torch.searchsorted(cu[1:].contiguous(), idx, right=True).clamp_(max=max(cu.numel() - 2, 0))
    return (idx - cu[doc]).long()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` on the first ``cos.shape[-1]`` channels of ``x`` (the rest pass).

    ``cos``/``sin`` must broadcast against ``x[..., :rot_dim]`` (e.g. ``[t, 1, rot]`` for ``x [t, h, d]``).
    """
    rot = cos.shape[-1]
    x_rot, x_pass = (x, None) if rot == x.shape[-1] else (x[..., :rot], x[..., rot:])
    x1, x2 = x_rot.chunk(2, dim=-1)
    out = x_rot * cos + torch.cat((-x2, x1), dim=-1) * sin
    return out if x_pass is None else torch.cat((out, x_pass), dim=-1)


def apply_rotary_pair(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_rotary` on query and key with the same ``cos``/``sin``."""
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


@functools.cache
def _compiled_rotary_pair() -> Any:
    return torch.compile(apply_rotary_pair)


def apply_rotary_pair_fused(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`apply_rotary_pair` as one ``torch.compile``-d graph per direction on CUDA tensors (eager elsewhere).

    Eager, RoPE is a slice, a negation, a ``cat``, two broadcast multiplies and an add, each a pass over q or k, and
    as many again in the backward. bench/ measured the compiled form at +4.5 % tokens/s for Llama-3.2-1B SFT on an
    H100 (bench/README.md, round 3). Query and key share one compiled call because each call of a compiled function
    costs the host ~0.2 ms more than the eager ops (guards, autograd wrappers; round 4's host probe), paid per
    layer and micro-batch. Shapes are compiled as they come: a second shape makes the graph dynamic.
    """
    if not q.is_cuda:
        return apply_rotary_pair(q, k, cos, sin)
    return _compiled_rotary_pair()(q, k, cos, sin)
