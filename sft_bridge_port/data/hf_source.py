"""Hub datasets (``HFDatasetConfig``) through the real ``datasets.load_dataset`` path, written once as Bridge-layout
jsonl (``training.jsonl``, ``validation.jsonl``, ``test.jsonl``) under ``dataset_root`` and then read like local data.

Example: ``prepare_hf_dataset(default_squad_config(2048), tok)`` ->
``~/.cache/sft_bridge_port/datasets/rajpurkar--squad`` with 90%/10% of SQuAD train as training/validation and SQuAD validation as test (Bridge's split).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from sft_bridge_port.data.config import HFDatasetConfig, get_dataset_root

logger = logging.getLogger(__name__)


def _load(cfg: HFDatasetConfig) -> Any:
    if cfg.dataset_dict is not None:
        return cfg.dataset_dict
    import datasets

    kwargs = dict(cfg.hf_kwargs or {})
    if cfg.revision is not None:
        kwargs.setdefault("revision", cfg.revision)
    if cfg.download_mode is not None:
        kwargs.setdefault("download_mode", cfg.download_mode)
    return datasets.load_dataset(cfg.dataset_name, cfg.dataset_subset, split=cfg.split, **kwargs)


def hf_splits(cfg: HFDatasetConfig) -> dict[str, Any]:
    """``{"training", "validation", "test"}`` -> ``datasets.Dataset`` following Bridge's split rules."""
    import datasets

    loaded = _load(cfg)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if "train" not in loaded:
        raise ValueError(f"dataset.dataset_name={cfg.dataset_name!r} has no 'train' split (splits: {list(loaded)}); "
                         "set dataset.split to the one to train on")
    out: dict[str, Any] = {}
    held_out = next((loaded[n] for n in ("validation", "valid", "dev") if n in loaded), None)
    if cfg.split_val_from_train and cfg.val_proportion:
        parts = loaded["train"].train_test_split(test_size=cfg.val_proportion, seed=cfg.seed, shuffle=True)
        out["training"], out["validation"] = parts["train"], parts["test"]
        test = loaded["test"] if "test" in loaded else held_out
    else:
        out["training"] = loaded["train"]
        if held_out is not None:
            out["validation"] = held_out
        test = loaded["test"] if "test" in loaded else None
    if test is not None:
        out["test"] = test
    if cfg.hf_filter_lambda is not None:
        out = {k: v.filter(cfg.hf_filter_lambda, fn_kwargs=cfg.hf_filter_lambda_kwargs or {}) for k, v in out.items()}
    return out


def prepare_hf_dataset(cfg: HFDatasetConfig, tokenizer: Any) -> Path:
    """Write the splits as jsonl (rows mapped by ``process_example_fn``) unless present and ``rewrite`` is False.

    Returns:
        The folder, usable as ``FinetuningDatasetConfig.dataset_root``.
    """
    root = Path(cfg.dataset_root or get_dataset_root(cfg.dataset_name))
    if (root / "training.jsonl").exists() and not cfg.rewrite:
        return root
    root.mkdir(parents=True, exist_ok=True)
    for split, ds in hf_splits(cfg).items():
        path = root / f"{split}.jsonl"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in ds:
                if cfg.process_example_fn is not None:
                    row = cfg.process_example_fn(row, tokenizer)
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
        logger.info("wrote %d rows of %s to %s", len(ds), cfg.dataset_name, path)
        if cfg.delete_raw:
            ds.cleanup_cache_files()
    return root
