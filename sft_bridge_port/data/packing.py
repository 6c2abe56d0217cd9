"""Bin packing of samples into ``packed_sequence_size`` slots (Bridge's ``PackedSequenceSpecs``).

A sample of ``L`` tokens occupies ``ceil((L - 1) / pad_seq_to_mult) * pad_seq_to_mult`` slots, because it is shifted
on its own (tokens = ids[:-1], labels = ids[1:]) and, for context parallelism, padded to the multiple. Example with
capacity 8 and slot lengths [5, 4, 3, 2] under first-fit-decreasing: bins ``[[0, 2], [1, 3]]`` (5+3, 4+2).

A pack is stored like Bridge's: the samples' *unshifted* ids and masks concatenated, plus ``seq_start_id`` (the
offset of each sample)::

    {"input_ids": [a0 a1 a2 b0 b1], "loss_mask": [0 1 1 0 1], "seq_start_id": [0, 3]}
"""

from __future__ import annotations

import numpy as np

from sft_bridge_port.data.chat_tokenize import EncodedSample


def slot_length(num_tokens: int, pad_seq_to_mult: int = 1) -> int:
    """Slots a sample of ``num_tokens`` ids uses after its own shift, rounded up to the CP multiple."""
    n = num_tokens - 1
    return -(-n // pad_seq_to_mult) * pad_seq_to_mult


class _FirstFit:
    """Leftmost bin with room >= need in O(log bins): a max segment tree over the bins' remaining room."""

    def __init__(self, capacity: int, max_bins: int):
        self.capacity, self.size = capacity, 1 << max(1, (max_bins - 1).bit_length())
        self.tree = [capacity] * (2 * self.size)  # unopened bins have full room; opening is implicit
        self.used = 0

    def place(self, need: int) -> int:
        node = 1
        while node < self.size:
            node = 2 * node if self.tree[2 * node] >= need else 2 * node + 1
        leaf = node - self.size
        self.used = max(self.used, leaf + 1)
        self.tree[node] -= need
        node //= 2
        while node:
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
            node //= 2
        return leaf


def pack_bins(lengths: list[int], capacity: int, algorithm: str = "first_fit_decreasing",
              seed: int = 0) -> list[list[int]]:
    """Group sample indices into bins whose slot lengths sum to at most ``capacity``.

    Args:
        lengths: slot length per sample (each must be <= capacity).
        capacity: ``packed_sequence_size``.
        algorithm: "first_fit_decreasing" (longest first; tightest) or "first_fit_shuffle" (seeded random order).
        seed: order seed for first_fit_shuffle.

    Returns:
        Bins of sample indices, each bin in insertion order. Example: ``pack_bins([5, 4, 3, 2], 8)`` ->
        ``[[0, 2], [1, 3]]``.
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"sample {too_long[0]} needs {lengths[too_long[0]]} slots > packed_sequence_size "
                         f"{capacity}; samples must be truncated to the packed size first")
    if algorithm == "first_fit_decreasing":
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    elif algorithm == "first_fit_shuffle":
        order = np.random.default_rng(seed).permutation(len(lengths)).tolist()
    else:
        raise ValueError(f"unknown packing_algorithm {algorithm!r}")
    fit = _FirstFit(capacity, max(1, len(lengths)))
    bins: list[list[int]] = []
    for i in order:
        b = fit.place(max(lengths[i], 0))
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
    return bins


def build_packs(samples: list[EncodedSample], bins: list[list[int]]) -> list[dict[str, np.ndarray]]:
    """Concatenate each bin's samples into one pack row (unshifted ids/masks + ``seq_start_id``)."""
    packs = []
    for members in bins:
        ids = [samples[i].input_ids for i in members]
        starts = np.cumsum([0] + [len(x) for x in ids[:-1]])
        packs.append({
            "input_ids": np.concatenate(ids).astype(np.int64),
            "loss_mask": np.concatenate([samples[i].loss_mask for i in members]).astype(np.uint8),
            "seq_start_id": starts.astype(np.int64),
        })
    return packs


def pack_samples(samples: list[EncodedSample], capacity: int, pad_seq_to_mult: int = 1,
                 algorithm: str = "first_fit_decreasing", seed: int = 0) -> tuple[list[dict], dict]:
    """Pack samples; returns the pack rows and Bridge-style metadata (``dataset_max_seqlen``,
    ``max_samples_per_bin``, ``min_packed_seqlen``) plus ``packing_efficiency`` (real tokens / slots)."""
    lengths = [slot_length(len(s.input_ids), pad_seq_to_mult) for s in samples]
    bins = pack_bins(lengths, capacity, algorithm, seed)
    packs = build_packs(samples, bins)
    real = sum(len(s.input_ids) - 1 for s in samples)
    meta = {
        "dataset_max_seqlen": max((len(s.input_ids) - 1 for s in samples), default=0),
        "max_samples_per_bin": max((len(b) for b in bins), default=0),
        "min_packed_seqlen": min((sum(lengths[i] for i in b) for b in bins), default=0),
        "num_samples": len(samples),
        "num_packs": len(bins),
        "packing_efficiency": real / (len(bins) * capacity) if bins else 0.0,
    }
    return packs, meta
