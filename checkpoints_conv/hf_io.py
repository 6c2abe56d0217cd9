"""Hugging Face folders: find one, read its safetensors tensor by tensor, and write one back (sharded).

Only safetensors are read: a ``.bin`` pickle can run arbitrary code when loaded, so such a folder is refused
with the command that converts it. Reading is lazy (``safe_open`` maps the file; one tensor is materialised
per ``get``), so an import holds one layer of HF tensors at a time, not the checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
# Tokenizer assets of the common tokenizer kinds (fast JSON, sentencepiece, BPE vocab/merges, tiktoken).
TOKENIZER_FILE_RE = re.compile(
    r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\.(json|txt)|merges\.txt|"
    r".*\.model|.*\.tiktoken|chat_template\.(jinja|json))$"
)
_HUB_ALLOW = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3  # transformers' default max_shard_size ("5GB")


def resolve_hf_folder(path_or_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder as is; otherwise a hub id (``org/name``) downloaded with ``huggingface_hub``.

    Only safetensors, JSON and tokenizer files are downloaded (never ``.bin`` pickles).

    Raises:
        FileNotFoundError: neither an existing folder nor something shaped like a hub id.
    """
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p
    text = str(path_or_id)
    if p.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        raise FileNotFoundError(f"{text}: not a Hugging Face model folder (and not a hub id such as org/name)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id=text, revision=revision, allow_patterns=_HUB_ALLOW))


def read_config(folder: str | os.PathLike) -> dict:
    """config.json of an HF folder as a dict (ValueError naming the file when absent or unreadable)."""
    path = Path(folder) / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: {folder} is not a Hugging Face model folder") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


class SafetensorsReader:
    """Tensor-by-tensor access to the safetensors of an HF folder (sharded with an index, or not).

    >>> with SafetensorsReader(folder) as r:              # doctest: +SKIP
    ...     w = r.get("model.embed_tokens.weight")         # only this tensor is read
    """

    def __init__(self, folder: str | os.PathLike, max_open_files: int | None = None):
        """``max_open_files`` bounds how many shards stay memory-mapped at once: pages of a mapped file that
        were read count in the process's RSS until it is unmapped, so a streaming import keeps one open."""
        self.folder = Path(folder)
        self.max_open_files = max_open_files
        self._file_of: dict[str, str] = {}
        self._handles: dict[str, object] = {}
        for file in self._weight_files():
            handle = self._open(file)
            for name in handle.keys():
                self._file_of[name] = file

    def _weight_files(self) -> list[str]:
        index = self.folder / INDEX_NAME
        if index.is_file():
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [f for f in files if not (self.folder / f).is_file()]
            if missing:
                raise ValueError(f"{index} names shard files that are missing: {missing}")
            return files
        files = sorted(p.name for p in self.folder.glob("*.safetensors"))
        if files:
            return files
        pickles = sorted(p.name for p in self.folder.glob("*.bin"))
        if pickles:
            raise ValueError(
                f"{self.folder} holds only pickle weights ({', '.join(pickles)}); conversion reads safetensors "
                f"only, because unpickling can run code. Convert once, in an environment you trust: "
                f"python -c \"from transformers import AutoModelForCausalLM as M; "
                f"M.from_pretrained('{self.folder}').save_pretrained('{self.folder}-safetensors')\""
            )
        raise ValueError(f"{self.folder} contains no *.safetensors weights")

    def _open(self, file: str):
        if file in self._handles:
            self._handles[file] = self._handles.pop(file)  # most recently used last
        else:
            while self.max_open_files and len(self._handles) >= self.max_open_files:
                del self._handles[next(iter(self._handles))]  # unmaps the least recently used shard
            try:
                self._handles[file] = safe_open(str(self.folder / file), framework="pt")
            except (SafetensorError, OSError) as exc:
                raise ValueError(
                    f"{self.folder / file} is not a readable safetensors file ({exc}); it is probably "
                    f"truncated (an interrupted download or copy). Fetch the file again."
                ) from None
        return self._handles[file]

    @property
    def names(self) -> set[str]:
        return set(self._file_of)

    def file_of(self, name: str) -> str:
        return str(self.folder / self._file_of[name]) if name in self._file_of else f"{self.folder} (absent)"

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor. Raises ValueError naming the tensor and folder when it is absent."""
        if name not in self._file_of:
            raise ValueError(f"tensor {name} is missing from {self.folder} (config.json implies it)")
        return self._open(self._file_of[name]).get_tensor(name)

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape from the file header, without reading its data (ValueError when absent)."""
        if name not in self._file_of:
            raise ValueError(f"tensor {name} is missing from {self.folder} (config.json implies it)")
        return tuple(self._open(self._file_of[name]).get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        return self.get(name).dtype

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_safetensors(
    tensors: Iterable[tuple[str, torch.Tensor]], out_dir: str | os.PathLike, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
) -> list[str]:
    """Write named tensors as HF safetensors, streaming: a shard is flushed as soon as it is full.

    One file ``model.safetensors`` when everything fits in one shard; otherwise
    ``model-00001-of-0000N.safetensors`` ... plus ``model.safetensors.index.json`` (the layout
    ``save_pretrained`` writes). Returns the file names written.
    """
    out_dir = Path(out_dir)
    shards: list[tuple[str, list[str], int]] = []  # (temp file, names, bytes)
    buf: dict[str, torch.Tensor] = {}
    size = 0

    def flush() -> None:
        nonlocal buf, size
        tmp = f".shard-{len(shards):05d}.safetensors"
        save_file(buf, str(out_dir / tmp), metadata={"format": "pt"})
        shards.append((tmp, list(buf), size))
        buf, size = {}, 0

    for name, t in tensors:
        nbytes = t.numel() * t.element_size()
        if buf and size + nbytes > max_shard_bytes:
            flush()
        buf[name] = t.contiguous()
        size += nbytes
    if buf or not shards:
        flush()
    return _name_shards(out_dir, shards)


def _name_shards(out_dir: Path, shards: list[tuple[str, list[str], int]]) -> list[str]:
    if len(shards) == 1:
        os.replace(out_dir / shards[0][0], out_dir / WEIGHTS_NAME)
        return [WEIGHTS_NAME]
    n = len(shards)
    weight_map, files = {}, []
    for i, (tmp, names, _) in enumerate(shards, start=1):
        final = f"model-{i:05d}-of-{n:05d}.safetensors"
        os.replace(out_dir / tmp, out_dir / final)
        weight_map.update({name: final for name in names})
        files.append(final)
    index = {"metadata": {"total_size": sum(s[2] for s in shards)}, "weight_map": weight_map}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return files


def tokenizer_files(folder: str | os.PathLike) -> list[Path]:
    """Tokenizer assets in a folder (tokenizer.json, tokenizer_config.json, *.model, vocab/merges, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and TOKENIZER_FILE_RE.match(p.name))


def copy_tokenizer(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Copy the tokenizer assets of ``src`` into ``dst`` (created); returns the names copied."""
    files = tokenizer_files(src)
    if files:
        Path(dst).mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, Path(dst) / f.name)
    return [f.name for f in files]


def iter_state(reader: SafetensorsReader) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (name, tensor) of a folder, one at a time (used by tests and verification)."""
    for name in sorted(reader.names):
        yield name, reader.get(name)
