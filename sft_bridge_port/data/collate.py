"""Batches in Bridge's format from samples (unpacked) or pack rows (packed).

Unpacked, one row per sample, padded to the batch max rounded up to ``pad_seq_length_to_mult`` (or to
``seq_length`` with ``pad_to_max_length``); padding has ``loss_mask == 0``::

    ids [a b c d], mask [0 0 1 1] -> tokens [a b c], labels [b c d], loss_mask [0 1 1], position_ids [0 1 2]

Packed, each sample is shifted on its own, so no label crosses a boundary, and positions restart::

    pack a0 a1 a2 | b0 b1          tokens    [a0 a1 b0 | pad]   (pack size 4)
                                   labels    [a1 a2 b1 | pad]
                                   position  [0  1  0  | 0  ]
                                   cu_seqlens [0, 2, 3, 4]  (last segment = trailing padding), -1 padded per batch

With ``pad_seq_to_mult = m`` every sample's segment is padded to a multiple of m; ``cu_seqlens`` then holds the padded
offsets and ``cu_seqlens_unpadded`` the cumulative real lengths (Transformer Engine's THD convention).
Padding tokens use ``pad_id``; samples are delimited by ``cu_seqlens`` and masks come from the token spans, never
from comparing tokens with an EOS id, so an EOS inside the content can never be confused with a separator.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from sft_bridge_port.data.chat_tokenize import EncodedSample


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def collate_unpacked(samples: Sequence[EncodedSample], pad_id: int, seq_length: int,
                     pad_to_max_length: bool = False, pad_mult: int = 1) -> dict[str, torch.Tensor | list]:
    """Shift each sample, pad to the batch length; ``token_count`` lists each row's real (shifted) length."""
    lengths = [len(s.input_ids) - 1 for s in samples]
    width = seq_length if pad_to_max_length else min(_round_up(max(lengths), pad_mult), seq_length)
    b = len(samples)
    tokens = np.full((b, width), pad_id, dtype=np.int64)
    labels = np.full((b, width), pad_id, dtype=np.int64)
    mask = np.zeros((b, width), dtype=np.float32)
    for r, s in enumerate(samples):
        n = lengths[r]
        tokens[r, :n], labels[r, :n], mask[r, :n] = s.input_ids[:-1], s.input_ids[1:], s.loss_mask[1:]
    return {
        "tokens": torch.from_numpy(tokens),
        "labels": torch.from_numpy(labels),
        "loss_mask": torch.from_numpy(mask),
        "position_ids": torch.arange(width, dtype=torch.int64).unsqueeze(0).repeat(b, 1),
        "token_count": lengths,
        "attention_mask": None,  # causal; Bridge's key, kept for drop-in forward steps
    }


def _layout_pack(pack: dict, pad_id: int, pad_mult: int) -> tuple[np.ndarray, ...]:
    """One pack row -> (tokens, labels, mask, positions, padded_lengths, real_lengths), unpadded at the end."""
    ids, lm, starts = pack["input_ids"], pack["loss_mask"], list(pack["seq_start_id"]) + [len(pack["input_ids"])]
    parts, real, padded = [], [], []
    for a, z in zip(starts[:-1], starts[1:]):
        n = int(z - a - 1)
        p = _round_up(n, pad_mult)
        seg = np.full((4, p), pad_id, dtype=np.int64)
        seg[0, :n], seg[1, :n], seg[2] = ids[a:z - 1], ids[a + 1:z], 0
        seg[2, :n] = lm[a + 1:z]
        seg[3] = np.arange(p)
        parts.append(seg)
        real.append(n)
        padded.append(p)
    cat = np.concatenate(parts, axis=1)
    return cat[0], cat[1], cat[2], cat[3], padded, real


def collate_packed(packs: Sequence[dict], pad_id: int, pack_size: int, pad_to_max_length: bool = True,
                   pad_mult: int = 1, cu_seqlens_width: int | None = None) -> dict[str, torch.Tensor | list]:
    """Pack rows -> a THD batch with ``cu_seqlens`` (int32, -1 padded), ``cu_seqlens_argmin``, ``max_seqlen``.

    Args:
        pack_size: ``packed_sequence_size``; rows are padded to it with ``pad_to_max_length``, else to the batch max
            rounded up to ``pad_mult``.
        cu_seqlens_width: fixed number of ``cu_seqlens`` entries (``pad_cu_seqlens`` for CUDA graphs: use
            ``max_samples_per_bin + 3``), else the batch max + 1.
    """
    laid = [_layout_pack(p, pad_id, pad_mult) for p in packs]
    width = pack_size if pad_to_max_length else min(_round_up(max(len(x[0]) for x in laid), pad_mult), pack_size)
    b = len(packs)
    out = {k: np.full((b, width), pad_id, dtype=np.int64) for k in ("tokens", "labels")}
    mask = np.zeros((b, width), dtype=np.float32)
    pos = np.zeros((b, width), dtype=np.int64)
    cus, cus_unpadded, counts = [], [], []
    for r, (tok, lab, lm, ps, padded, real) in enumerate(laid):
        n = len(tok)
        out["tokens"][r, :n], out["labels"][r, :n], mask[r, :n], pos[r, :n] = tok, lab, lm, ps
        pos[r, n:] = np.arange(width - n)
        tail = [width - n] if width > n else []  # trailing padding is its own segment, as in Bridge
        cus.append(np.cumsum([0] + padded + tail))
        cus_unpadded.append(np.cumsum([0] + real + tail))
        counts.append(int(sum(real)))
    batch = {"tokens": torch.from_numpy(out["tokens"]), "labels": torch.from_numpy(out["labels"]),
             "loss_mask": torch.from_numpy(mask), "position_ids": torch.from_numpy(pos), "token_count": counts,
             "attention_mask": None}
    batch.update(_cu_seqlens_fields("cu_seqlens", cus, cu_seqlens_width))
    if pad_mult > 1:
        batch.update(_cu_seqlens_fields("cu_seqlens_unpadded", cus_unpadded, cu_seqlens_width))
    return batch


def _cu_seqlens_fields(name: str, rows: list[np.ndarray], width: int | None) -> dict[str, torch.Tensor]:
    """``name`` [b, w] int32 padded with -1 (always at least one -1, as in Bridge), ``name_argmin`` [b, 1] (index of
    the first -1) and, for the main field, ``max_seqlen`` [b, 1] (longest segment)."""
    need = max(len(r) for r in rows) + 1
    width = need if width is None else width
    if width < need:
        raise ValueError(f"a pack has {need - 1} segments but pad_cu_seqlens fixes cu_seqlens to {width} entries; "
                         "recompute the metadata (max_samples_per_bin) or disable pad_cu_seqlens")
    cu = np.full((len(rows), width), -1, dtype=np.int32)
    for r, row in enumerate(rows):
        cu[r, :len(row)] = row
    fields = {name: torch.from_numpy(cu),
              f"{name}_argmin": torch.tensor([[len(r)] for r in rows], dtype=torch.int64)}
    if name == "cu_seqlens":
        fields["max_seqlen"] = torch.tensor([[int(np.diff(r).max())] for r in rows], dtype=torch.int32)
    return fields
