"""Raw rows from disk or memory, each with a location string used in every error message.

A source is a file (``.jsonl``, ``.json``, ``.parquet``, ``.arrow``), a folder saved by ``datasets.save_to_disk``, or a
Python iterable of dicts. ``split_sources(dataset_root)`` maps a Bridge-layout folder
(``training.jsonl``, ``validation.jsonl``, ``test.jsonl``) to its splits. Example::

    for row, where in iter_rows("data/training.jsonl"):   # where == "data/training.jsonl:1", ...
        ...
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from sft_bridge_port.data.conversation import BadSampleError

SPLITS = ("training", "validation", "test")
SPLIT_ALIASES = {"training": ("training", "train"), "validation": ("validation", "valid", "val", "dev"),
                 "test": ("test",)}
EXTENSIONS = (".jsonl", ".json", ".parquet", ".arrow")


def split_sources(dataset_root: Any) -> dict[str, Any]:
    """Map ``dataset_root`` to ``{split: source}``; a single file or an iterable is the training split only.

    Raises:
        ValueError: the path does not exist, or a folder has no training file.
    """
    if isinstance(dataset_root, dict):
        unknown = set(dataset_root) - set(SPLITS)
        if unknown:
            raise ValueError(f"dataset.dataset_root dict keys must be {SPLITS}, got {sorted(unknown)}")
        return dict(dataset_root)
    if not isinstance(dataset_root, (str, os.PathLike)):
        return {"training": dataset_root}
    root = Path(dataset_root)
    if root.is_file():
        return {"training": root}
    if not root.is_dir():
        raise ValueError(f"dataset.dataset_root={str(root)!r} does not exist (expected a file or a folder with "
                         "training.jsonl[, validation.jsonl, test.jsonl])")
    if (root / "dataset_dict.json").exists() or (root / "dataset_info.json").exists():
        return _saved_dataset_splits(root)
    found = {}
    for split, names in SPLIT_ALIASES.items():
        for name in names:
            hits = [root / f"{name}{ext}" for ext in EXTENSIONS if (root / f"{name}{ext}").is_file()]
            if hits:
                found[split] = hits[0]
                break
    if "training" not in found:
        raise ValueError(f"dataset.dataset_root={str(root)!r} has no training file; expected one of "
                         f"{[f'training{e}' for e in EXTENSIONS]}")
    return found


def _saved_dataset_splits(root: Path) -> dict[str, Any]:
    import datasets

    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.Dataset):
        return {"training": loaded}
    out = {}
    for split, names in SPLIT_ALIASES.items():
        name = next((n for n in names if n in loaded), None)
        if name is not None:
            out[split] = loaded[name]
    return out


def iter_rows(source: Any) -> Iterator[tuple[Any, str]]:
    """Yield ``(row, location)``; malformed JSON lines are yielded as ``BadSampleError`` values (not raised) so
    the caller applies ``on_bad_sample`` uniformly."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _iter_jsonl(path)
        elif suffix == ".json":
            yield from _iter_json(path)
        elif suffix in (".parquet", ".arrow"):
            yield from _iter_table(path)
        else:
            raise ValueError(f"{path}: unsupported data file type {suffix!r}; use one of {EXTENSIONS}")
        return
    name = type(source).__name__
    for i, row in enumerate(source):
        yield row, f"<{name}>[{i}]"


def _iter_jsonl(path: Path) -> Iterator[tuple[Any, str]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                yield json.loads(line), where
            except json.JSONDecodeError as err:
                yield BadSampleError(where, "<line>", "malformed_json", f"invalid JSON ({err.msg} at column "
                                     f"{err.colno})"), where


def _iter_json(path: Path) -> Iterator[tuple[Any, str]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        yield from _iter_jsonl(path)  # many ".json" files are really JSON lines
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f"{path}: a .json data file must hold a list of rows (or JSON lines)")
    for i, row in enumerate(data):
        yield row, f"{path}[{i}]"


def _iter_table(path: Path) -> Iterator[tuple[Any, str]]:
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        import datasets

        table = datasets.Dataset.from_file(str(path)).data.table
    for batch_start in range(0, table.num_rows, 4096):
        for i, row in enumerate(table.slice(batch_start, 4096).to_pylist(), start=batch_start):
            yield row, f"{path}:row {i}"


def fingerprint(source: Any) -> str | None:
    """Content hash of a file source (sha256 of its bytes), or None for in-memory sources (never cached)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
