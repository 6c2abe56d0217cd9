"""The contract the training loop uses: ``build_sft_data_iterators`` -> ``SFTDataIterators(train, valid, test, stats)``.

Global order, independent of the data-parallel size: epoch ``e`` visits the items in the permutation drawn from
``(seed, e)``; global sample ``g`` is item ``perm_{g // N}[g % N]``. Global micro-batch ``j`` (after resuming at
``consumed_train_samples``) holds samples ``consumed + j*MBS*DP ... + MBS*DP - 1`` and rank ``r`` takes the slice
``[r*MBS, (r+1)*MBS)``. So at DP=2 rank 0 sees DP=1's micro-batches 0, 2, 4, ... and rank 1 sees 1, 3, 5, ...::

    DP=1, MBS=1: [s0] [s1] [s2] [s3]        DP=2, MBS=1: rank0 [s0] [s2]   rank1 [s1] [s3]

With packing an item is a pack (Bridge counts packed sequences as samples).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from sft_bridge_port.data.builder import SplitData, pad_token_id, prepare_splits
from sft_bridge_port.data.collate import collate_packed, collate_unpacked
from sft_bridge_port.data.config import FinetuningDatasetConfig
from sft_bridge_port.data.encode import resolve_options
from sft_bridge_port.data.stats import DataStats


@dataclass
class SFTDataIterators:
    """``train``: infinite iterator of this rank's micro-batches; ``valid`` / ``test``: callables returning a fresh
    finite iterator (None when the split is absent or disabled); ``stats``: per-split ``DataStats``."""

    train: Iterator[dict]
    valid: Callable[[], Iterator[dict]] | None
    test: Callable[[], Iterator[dict]] | None
    stats: dict[str, DataStats] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)
    packed: bool = False


class GlobalOrder:
    """Seeded epoch permutations of ``n`` items; ``order[g]`` is the item at global position ``g``."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        if n <= 0:
            raise ValueError("the training split has no usable sample (see the data statistics for skipped rows)")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self._epoch, self._perm = -1, None

    def __getitem__(self, g: int) -> int:
        epoch, pos = divmod(g, self.n)
        if not self.shuffle:
            return pos
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return int(self._perm[pos])


def rank_slices(start: int, micro_batch_size: int, rank: int, world: int) -> Iterator[range]:
    """Global positions of this rank's micro-batches from ``start``: ``range(start + j*MBS*DP + rank*MBS, +MBS)``."""
    step = micro_batch_size * world
    for j in itertools.count():
        first = start + j * step + rank * micro_batch_size
        yield range(first, first + micro_batch_size)


def _collator(cfg: FinetuningDatasetConfig, tokenizer: Any, packed: bool, max_bin: int) -> Callable[[list], dict]:
    opts, pad = resolve_options(cfg), pad_token_id(tokenizer)
    specs = cfg.packed_sequence_specs
    if packed:
        # Bridge's recipes set pad_to_max_length whenever packing is on; a fixed shape also suits CUDA graphs.
        width = max_bin + 3 if specs.pad_cu_seqlens else None
        if specs.pad_cu_seqlens and not opts.pad_to_max_length:
            raise ValueError("packed_sequence_specs.pad_cu_seqlens=True needs dataset_kwargs pad_to_max_length=True")
        return lambda items: collate_packed(items, pad, specs.packed_sequence_size, opts.pad_to_max_length,
                                            specs.pad_seq_to_mult, width)
    return lambda items: collate_unpacked(items, pad, cfg.seq_length, opts.pad_to_max_length,
                                          opts.pad_seq_length_to_mult)


def _train_iter(data: SplitData, collate, seed: int, mbs: int, rank: int, world: int, start: int) -> Iterator[dict]:
    order = GlobalOrder(len(data.items), seed)
    for positions in rank_slices(start, mbs, rank, world):
        yield collate([data.items[order[g]] for g in positions])


def _eval_iter(data: SplitData, collate, mbs: int, rank: int, world: int, drop_last: bool) -> Iterator[dict]:
    n = len(data.items)
    for positions in rank_slices(0, mbs, rank, world):
        global_end = positions.start - rank * mbs + mbs * world
        if positions.start >= n or (drop_last and global_end > n):
            return
        yield collate([data.items[g] for g in positions if g < n])


def build_sft_data_iterators(dataset_cfg: FinetuningDatasetConfig, tokenizer: Any, *, micro_batch_size: int,
                             data_parallel_rank: int, data_parallel_size: int,
                             consumed_train_samples: int = 0) -> SFTDataIterators:
    """Prepare the splits (cached when packed) and return this rank's iterators.

    Args:
        dataset_cfg: ``FinetuningDatasetConfig`` or ``HFDatasetConfig``.
        tokenizer: from ``load_tokenizer``.
        micro_batch_size: items per micro-batch on one rank.
        data_parallel_rank / data_parallel_size: this rank's slot in the data-parallel group.
        consumed_train_samples: global samples already trained on (resume point; a multiple of MBS*DP).

    Returns:
        ``SFTDataIterators``; batches hold ``tokens, labels, position_ids`` [b, s] int64, ``loss_mask`` [b, s]
        float32, ``token_count`` (list of real lengths) and, packed, ``cu_seqlens`` [b, n] int32 (-1 padded),
        ``cu_seqlens_argmin`` [b, 1], ``max_seqlen`` [b, 1] (+ ``cu_seqlens_unpadded(_argmin)`` with pad_seq_to_mult>1).
    """
    if micro_batch_size < 1 or data_parallel_size < 1 or not 0 <= data_parallel_rank < data_parallel_size:
        raise ValueError(f"bad data-parallel layout: micro_batch_size={micro_batch_size}, "
                         f"rank={data_parallel_rank}, size={data_parallel_size}")
    if consumed_train_samples % (micro_batch_size * data_parallel_size):
        raise ValueError(f"consumed_train_samples={consumed_train_samples} is not a multiple of micro_batch_size * "
                         f"data_parallel_size = {micro_batch_size * data_parallel_size}")
    splits = prepare_splits(dataset_cfg, tokenizer)
    train = splits["training"]
    max_bin = max(d.meta.get("max_samples_per_bin", 1) for d in splits.values())
    collate = _collator(dataset_cfg, tokenizer, train.packed, max_bin)
    args = (micro_batch_size, data_parallel_rank, data_parallel_size)

    def finite(name: str) -> Callable[[], Iterator[dict]] | None:
        if name not in splits:
            return None
        return lambda: _eval_iter(splits[name], collate, *args, dataset_cfg.drop_last)

    return SFTDataIterators(
        train=_train_iter(train, collate, dataset_cfg.seed, *args, consumed_train_samples),
        valid=finite("validation"), test=finite("test"),
        stats={k: v.stats for k, v in splits.items()},
        num_samples={k: len(v.items) for k, v in splits.items()},
        packed=train.packed,
    )
