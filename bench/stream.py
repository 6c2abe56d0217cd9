"""The packed token stream both systems train on: random tokens, SFT-like document lengths, one pack per row.

Document lengths are log-normal (median about 400 tokens, clipped to 32..seq), the shape of chat SFT data;
documents are packed in order and the one that crosses a pack boundary is cut there, so every pack holds
exactly ``seq`` real tokens (no padding). Each pack becomes a Bridge-format batch (what the training engine's
``forward_step`` reads) and HF inputs with ``position_ids`` restarting at every document, which makes HF
attend only inside documents, as ``cu_seqlens`` does for us.

Example: lengths 5 and 3 in a pack of 8 -> ``position_ids = [0,1,2,3,4,0,1,2]``, ``cu_seqlens = [[0,5,8]]``.

A micro-batch of several packs (``--packs-per-micro-batch K``) is :func:`join_packs` for us: one THD row of
``K·seq`` tokens whose documents are exactly the packs' documents, i.e. what a user gets from
``packed_sequence_size = K·seq`` (our runtime refuses ``micro_batch_size > 1`` for packed data and says so), and
:func:`stack_packs` for HF: a ``[K, seq]`` batch, so HF's block-causal SDPA masks stay ``seq × seq``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Pack:
    """One packed row: tokens ``[1, seq]`` and the real document lengths in it."""

    tokens: torch.Tensor
    lengths: list[int]

    def position_ids(self) -> torch.Tensor:
        return torch.cat([torch.arange(n) for n in self.lengths])[None]

    def bridge_batch(self) -> dict[str, torch.Tensor]:
        """The batch dict of the data contract (packed keys included), on the CPU like a data loader's."""
        cu = torch.tensor([0, *torch.tensor(self.lengths).cumsum(0).tolist()], dtype=torch.int32)[None]
        labels = torch.roll(self.tokens, -1, dims=1)
        return {
            "tokens": self.tokens, "labels": labels, "loss_mask": torch.ones_like(self.tokens, dtype=torch.float32),
            "position_ids": self.position_ids(), "cu_seqlens": cu,
            "cu_seqlens_argmin": torch.tensor([[cu.shape[1]]]), "max_seqlen": torch.tensor([[max(self.lengths)]]),
        }  # fmt: skip


def join_packs(packs: list[Pack]) -> Pack:
    """One row holding ``packs`` back to back: same documents, same tokens, ``cu_seqlens`` over all of them."""
    if len(packs) == 1:
        return packs[0]
    return Pack(torch.cat([p.tokens for p in packs], dim=1), [n for p in packs for n in p.lengths])


def stack_packs(packs: list[Pack]) -> tuple[torch.Tensor, torch.Tensor]:
    """HF inputs of a micro-batch: ``input_ids`` and per-document ``position_ids``, both ``[len(packs), seq]``."""
    return torch.cat([p.tokens for p in packs]), torch.cat([p.position_ids() for p in packs])


def document_lengths(total: int, seq: int, seed: int = 0, median: float = 400.0, sigma: float = 0.9) -> list[int]:
    """Log-normal document lengths (clipped to ``32..seq``) summing to at least ``total`` tokens."""
    gen = torch.Generator().manual_seed(seed)
    out: list[int] = []
    while sum(out) < total:
        x = torch.randn(256, generator=gen) * sigma + torch.log(torch.tensor(median))
        out.extend(int(v) for v in x.exp().clamp(32, seq).round().tolist())
    return out


def make_packs(n_packs: int, seq: int, vocab: int, seed: int = 0) -> list[Pack]:
    """``n_packs`` packs of exactly ``seq`` tokens each (documents cut at pack boundaries)."""
    lengths = iter(document_lengths(2 * n_packs * seq, seq, seed))  # cut documents waste at most one each
    gen = torch.Generator().manual_seed(seed + 1)
    packs = []
    for _ in range(n_packs):
        row: list[int] = []
        while sum(row) < seq:
            row.append(min(next(lengths), seq - sum(row)))
        tokens = torch.randint(0, vocab, (1, seq), generator=gen)
        packs.append(Pack(tokens, row))
    return packs
