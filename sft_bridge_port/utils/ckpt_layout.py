"""Bridge's checkpoint folder layout, shared by training (save/resume) and conversion (import/export).

A checkpoint root looks like this (Megatron-Bridge v0.5, torch_dist)::

    <root>/
      latest_checkpointed_iteration.txt   # "50": the newest complete iteration (Megatron-LM tracker)
      latest_train_state.pt               # copy of the newest iter_*/train_state.pt (Bridge tracker)
      iter_0000050/
        .metadata, __0_0.distcp, metadata.json, common.pt   # megatron-core dist_checkpointing (common.pt: < 0.19)
        run_config.yaml                                      # ConfigContainer.to_yaml()
        train_state.pt                                       # TrainState (step, consumed samples, ...)
        tokenizer/                                           # tokenizer.save_pretrained()

Every iteration folder is written under a temporary name and renamed into place only once complete, and the
tracker is rewritten (atomically) only after that rename: a kill during a save leaves the previous checkpoint
and the tracker that points at it untouched.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

TRACKER_FILE = "latest_checkpointed_iteration.txt"
LEGACY_COMMON_FILE = "common.pt"


def dist_checkpoint_files() -> frozenset[str]:
    """The files megatron-core's torch_dist save writes into an iteration folder, besides the ``.distcp`` shards.

    ``common.pt`` holds the non-sharded state in megatron-core 0.16; 0.19 stores that state inside the DCP files
    instead (it still reads a legacy ``common.pt``, but 0.16 cannot read a checkpoint written without one).
    """
    from megatron.core.dist_checkpointing import serialization

    in_dcp = hasattr(serialization, "_legacy_common_state_exists")  # 0.19: common state inside the DCP files
    return frozenset({".metadata", "metadata.json"} | (set() if in_dcp else {LEGACY_COMMON_FILE}))
TRAIN_STATE_FILE = "train_state.pt"
LATEST_TRAIN_STATE_FILE = "latest_train_state.pt"
CONFIG_FILE = "run_config.yaml"
TOKENIZER_DIR = "tokenizer"
_ITER_RE = re.compile(r"^iter_(\d{7})$")


class CheckpointNotFoundError(FileNotFoundError):
    """Raised when a path given as a checkpoint holds no usable Megatron checkpoint."""


def iter_dir_name(step: int) -> str:
    """``iter_dir_name(50) == "iter_0000050"``."""
    return f"iter_{step:07d}"


def list_iterations(root: str | os.PathLike) -> list[int]:
    """Steps of the complete ``iter_*`` folders under ``root`` (temporary folders are ignored), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    steps = []
    for child in root.iterdir():
        m = _ITER_RE.match(child.name)
        if m and child.is_dir():
            steps.append(int(m.group(1)))
    return sorted(steps)


def read_tracker(root: str | os.PathLike) -> int | None:
    """Step recorded in ``latest_checkpointed_iteration.txt``, or None when the file is absent.

    Raises:
        CheckpointNotFoundError: the tracker exists but does not hold an integer.
    """
    path = Path(root) / TRACKER_FILE
    if not path.exists():
        return None
    text = path.read_text().strip()
    if text == "release":
        return 0
    try:
        return int(text)
    except ValueError as exc:
        raise CheckpointNotFoundError(
            f"{path}: expected an iteration number, found {text!r}. Delete the file or write the step of a "
            f"complete iter_* folder into it."
        ) from exc


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_tracker(root: str | os.PathLike, step: int) -> None:
    """Point ``latest_checkpointed_iteration.txt`` at ``step`` (atomically)."""
    write_text_atomic(Path(root) / TRACKER_FILE, f"{step}\n")


def resolve_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[Path, int]:
    """Find the iteration folder a user means by ``path``.

    ``path`` may be a checkpoint root (the tracker, else the highest ``iter_*``, is used) or an ``iter_*``
    folder itself. ``step`` picks an explicit iteration under a root (Bridge's ``checkpoint.ckpt_step``).

    Returns:
        (iteration folder, step)

    Raises:
        CheckpointNotFoundError: with the path and what was looked for.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint path {p} does not exist")
    m = _ITER_RE.match(p.name)
    if m and p.is_dir():
        return _check_complete(p), int(m.group(1))
    if step is None:
        step = read_tracker(p)
        if step is None:
            steps = list_iterations(p)
            if not steps:
                raise CheckpointNotFoundError(
                    f"{p} holds neither {TRACKER_FILE} nor any iter_XXXXXXX folder: it is not a Megatron "
                    f"checkpoint. For a Hugging Face folder, convert it first (python -m checkpoints_conv import) "
                    f"or point checkpoint.pretrained_checkpoint at it directly."
                )
            step = steps[-1]
    it = p / iter_dir_name(step)
    if not it.is_dir():
        raise CheckpointNotFoundError(
            f"{p}: the tracker names iteration {step} but {it.name}/ is missing (present: "
            f"{[iter_dir_name(s) for s in list_iterations(p)]}). The last save was probably interrupted; "
            f"write one of the present steps into {TRACKER_FILE}."
        )
    return _check_complete(it), step


def _check_complete(it: Path) -> Path:
    if not (it / ".metadata").exists() and not (it / "metadata.json").exists():
        raise CheckpointNotFoundError(
            f"{it} is incomplete: no dist_checkpointing metadata (.metadata / metadata.json) inside."
        )
    return it


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success rename it to ``target``, on error delete it.

    >>> with atomic_directory("ckpt/iter_0000010") as tmp:   # doctest: +SKIP
    ...     write_everything_into(tmp)
    # ckpt/iter_0000010 now exists, complete, or not at all.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; refusing to overwrite it")
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def is_megatron_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a checkpoint root or iteration folder (not, e.g., a Hugging Face folder)."""
    try:
        resolve_checkpoint(path)
        return True
    except CheckpointNotFoundError:
        return False


def is_hf_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like a Hugging Face model folder (config.json plus weights)."""
    p = Path(path)
    return (p / "config.json").is_file() and (
        any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file() or any(p.glob("*.bin"))
    )
