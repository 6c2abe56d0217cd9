"""On-disk cache of packed splits: a parquet file of pack rows plus a metadata JSON, keyed by everything that changes
the packs (data file hash, tokenizer, chat template, seq length, packing and encoding options).

Layout (Bridge v0.5 style, with the key in the name so configurations never overwrite each other)::

    <dataset_root>/packed/<tokenizer_name>_pad_seq_to_mult<k>/training_<N>_<key12>.parquet
    <dataset_root>/packed/<tokenizer_name>_pad_seq_to_mult<k>/training_<N>_<key12>.parquet.meta.json

``PackedSequenceSpecs.packed_train_data_path`` / ``packed_val_data_path`` / ``packed_metadata_path`` override the
paths; a file there whose stored key differs from the current one is rebuilt (and the reason logged).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the pack layout or the masking rule changes


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of the tokenizer's full serialisation (vocab, merges, normalisers) and special tokens."""
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True).encode())
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """Stable sha256 of the key parts (dataclasses and tuples serialised as JSON)."""
    def plain(v):
        return dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    blob = json.dumps({k: plain(v) for k, v in parts.items()}, sort_keys=True, default=str)
    return hashlib.sha256(f"v{CACHE_VERSION}:{blob}".encode()).hexdigest()


def default_cache_path(source: Path, split: str, tokenizer_name: str, pack_size: int, pad_mult: int,
                       key: str) -> Path:
    root = source if source.is_dir() else source.parent
    name = tokenizer_name.strip("/").replace("/", "--") or "tokenizer"
    return root / "packed" / f"{name}_pad_seq_to_mult{pad_mult}" / f"{split}_{pack_size}_{key[:12]}.parquet"


def load_packs(path: Path, key: str, meta_path: Path | None = None) -> tuple[list[dict], dict] | None:
    """The cached packs and metadata, or None when absent or made under another key (then it is rebuilt)."""
    meta_path = meta_path or Path(f"{path}.meta.json")
    if not (path.exists() and meta_path.exists()):
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("cache_key") != key:
        logger.warning("packed cache %s was built with other data/tokenizer/options; rebuilding it", path)
        return None
    table = pq.read_table(path)
    cols = {name: table.column(name).to_pylist() for name in ("input_ids", "loss_mask", "seq_start_id")}
    packs = [{"input_ids": np.asarray(i, dtype=np.int64), "loss_mask": np.asarray(m, dtype=np.uint8),
              "seq_start_id": np.asarray(s, dtype=np.int64)}
             for i, m, s in zip(cols["input_ids"], cols["loss_mask"], cols["seq_start_id"])]
    return packs, meta


def save_packs(path: Path, packs: list[dict], meta: dict, meta_path: Path | None = None) -> None:
    """Write parquet + metadata atomically (temp name, then rename), so concurrent or killed writers never leave a
    half-written cache that a later run would trust."""
    meta_path = meta_path or Path(f"{path}.meta.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "input_ids": pa.array([p["input_ids"].astype(np.int32) for p in packs], type=pa.list_(pa.int32())),
        "loss_mask": pa.array([p["loss_mask"].astype(np.int8) for p in packs], type=pa.list_(pa.int8())),
        "seq_start_id": pa.array([p["seq_start_id"].astype(np.int32) for p in packs], type=pa.list_(pa.int32())),
    })
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    tmp_meta = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    os.replace(tmp_meta, meta_path)
