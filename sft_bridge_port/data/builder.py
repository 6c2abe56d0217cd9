"""Prepare each split once: rows -> encoded samples -> (packs, cached on disk) with statistics.

``prepare_splits(cfg, tokenizer)`` returns ``{"training": SplitData, "validation": ..., "test": ...}``. With packing,
rank 0 builds (or loads) the parquet cache first and the other ranks then load it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from sft_bridge_port.data import pack_cache
from sft_bridge_port.data.config import FinetuningDatasetConfig, HFDatasetConfig, PackedSequenceSpecs
from sft_bridge_port.data.encode import SampleEncoder
from sft_bridge_port.data.packing import pack_samples
from sft_bridge_port.data.sources import fingerprint, iter_rows, split_sources
from sft_bridge_port.data.stats import DataStats

logger = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One prepared split: ``items`` are ``EncodedSample`` (unpacked) or pack rows (packed)."""

    name: str
    items: list
    packed: bool
    stats: DataStats
    meta: dict


def pad_token_id(tokenizer: Any) -> int:
    """Padding id: the tokenizer's pad, else its EOS, else 0 (padding is always masked, so any id is safe)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def max_sample_tokens(cfg: FinetuningDatasetConfig) -> int:
    """Longest sample in ids (before the shift): it must fill at most seq_length (or the packed size) positions."""
    specs = cfg.packed_sequence_specs
    if specs is None or not specs.enabled:
        return cfg.seq_length + 1
    room = min(cfg.seq_length, specs.packed_sequence_size)
    return room // specs.pad_seq_to_mult * specs.pad_seq_to_mult + 1


def run_rank0_first(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0, then on the others (so they find rank 0's files); plain call outside torch.distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return fn()
    result = fn() if dist.get_rank() == 0 else None
    dist.barrier()
    return fn() if dist.get_rank() != 0 else result


def prepare_splits(cfg: FinetuningDatasetConfig, tokenizer: Any) -> dict[str, SplitData]:
    """Resolve sources (downloading ``HFDatasetConfig`` data first) and prepare the splits the config asks for."""
    root = cfg.dataset_root
    if isinstance(cfg, HFDatasetConfig):
        from sft_bridge_port.data.hf_source import prepare_hf_dataset

        root = run_rank0_first(lambda: prepare_hf_dataset(cfg, tokenizer))
    if root is None:
        raise ValueError("dataset.dataset_root is not set: give a folder with training.jsonl, a data file, or rows")
    sources = split_sources(root)
    wanted = ["training"] + (["validation"] if cfg.do_validation else []) + (["test"] if cfg.do_test else [])
    out = {}
    for split in wanted:
        if split in sources:
            out[split] = run_rank0_first(lambda s=split: prepare_split(cfg, tokenizer, s, sources[s]))
        elif split != "training":
            logger.warning("dataset: no %s split found in %s; %s iterator disabled", split, root, split)
    return out


def prepare_split(cfg: FinetuningDatasetConfig, tokenizer: Any, split: str, source: Any) -> SplitData:
    """Encode one split and, when packing is on, pack it through the on-disk cache."""
    specs = cfg.packed_sequence_specs
    limit = cfg.max_train_samples if split == "training" else None
    encoder = SampleEncoder(cfg, tokenizer, max_sample_tokens(cfg))
    if specs is None or not specs.enabled:
        stats = DataStats()
        samples = encoder.encode_rows(iter_rows(source), stats, limit)
        _log(split, stats)
        return SplitData(split, samples, False, stats, {})
    key_parts = {
        "data": fingerprint(source), "tokenizer": pack_cache.tokenizer_fingerprint(tokenizer),
        "chat_template": encoder.opts.chat_template or getattr(tokenizer, "chat_template", None),
        "options": encoder.opts, "seq_length": cfg.seq_length, "pack_size": specs.packed_sequence_size,
        "pad_seq_to_mult": specs.pad_seq_to_mult, "algorithm": specs.packing_algorithm, "seed": cfg.seed,
        "limit": limit,
    }
    key = pack_cache.cache_key(key_parts)
    path, meta_path = _cache_paths(cfg, specs, split, source, tokenizer, key)
    if key_parts["data"] is None:
        path = meta_path = None  # in-memory rows have no content hash, so a cache could go stale unnoticed
    if path is not None:
        hit = pack_cache.load_packs(path, key, meta_path)
        if hit is not None:
            packs, meta = hit
            stats = DataStats(**{k: v for k, v in meta["stats"].items() if k in _STAT_FIELDS})
            stats.skipped.update(meta["stats"]["skipped"])
            stats.examples.update(meta["stats"]["skip_examples"])
            _log(split, stats, f"(cache hit: {path})")
            return SplitData(split, packs, True, stats, {**meta, "cache_hit": True, "cache_path": str(path)})
    stats = DataStats()
    samples = encoder.encode_rows(iter_rows(source), stats, limit)
    packs, pack_meta = pack_samples(samples, specs.packed_sequence_size, specs.pad_seq_to_mult,
                                    specs.packing_algorithm, cfg.seed)
    stats.packs, stats.pack_slots = len(packs), len(packs) * specs.packed_sequence_size
    meta = {**pack_meta, "cache_key": key, "key_parts": key_parts, "stats": stats.to_dict(), "split": split}
    meta["stats"]["pack_slots"] = stats.pack_slots
    if path is not None:
        pack_cache.save_packs(path, packs, meta, meta_path)
    _log(split, stats, f"(packed cache written: {path})" if path else "(in-memory source: not cached)")
    return SplitData(split, packs, True, stats, {**meta, "cache_hit": False, "cache_path": str(path) if path else None})


_STAT_FIELDS = ("rows_read", "samples", "tokens", "trained_tokens", "truncated", "packs", "pack_slots")


def _cache_paths(cfg: FinetuningDatasetConfig, specs: PackedSequenceSpecs, split: str, source: Any, tokenizer: Any,
                 key: str) -> tuple[Path | None, Path | None]:
    explicit = {"training": specs.packed_train_data_path, "validation": specs.packed_val_data_path}.get(split)
    meta = Path(specs.packed_metadata_path) if (split == "training" and specs.packed_metadata_path) else None
    if explicit:
        return Path(explicit), meta
    if not isinstance(source, (str, Path)):
        return None, None
    name = specs.tokenizer_model_name or Path(getattr(tokenizer, "name_or_path", "") or "tokenizer").name
    root = Path(cfg.dataset_root) if isinstance(cfg.dataset_root, (str, Path)) else Path(source).parent
    return pack_cache.default_cache_path(root, split, name, specs.packed_sequence_size, specs.pad_seq_to_mult,
                                         key), meta


def _log(split: str, stats: DataStats, suffix: str = "") -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return
    logger.info("%s %s", stats.report(split), suffix)
