"""Megatron checkpoint (any TP/PP, imported or written by training) -> HF folder loadable by transformers.

The model is rebuilt from ``run_config.yaml``'s provider at TP=1/PP=1 in a world of one and
dist_checkpointing reshards the saved shards into it; the table then turns each parameter into HF tensors,
streamed into safetensors shards. The output folder is written under a temporary name and renamed at the end::

    <hf_path>/
      config.json, generation_config.json
      model.safetensors                        # or model-0000k-of-0000n.safetensors + model.safetensors.index.json
      tokenizer.json, tokenizer_config.json, ...   # from iter_*/tokenizer/ (or --hf-config-source)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import torch

from checkpoints_conv.hf_io import (
    CONFIG_NAME,
    DEFAULT_MAX_SHARD_BYTES,
    GENERATION_CONFIG_NAME,
    copy_tokenizer,
    read_config,
    write_safetensors,
)
from checkpoints_conv.importer import _require_world_of_one
from checkpoints_conv.mapping import ModelShape
from checkpoints_conv.model_io import build_tp1_model, iter_hf_tensors
from checkpoints_conv.progress import progress_bar
from checkpoints_conv.tables import get_table
from sft_bridge_port.utils.dist_ckpt import unwrap

EMBEDDING_KEY = "embedding.word_embeddings.weight"


def load_provider(iter_dir: str | os.PathLike) -> Any:
    """The model provider recorded in ``iter_dir/run_config.yaml`` (written by import or by training)."""
    from sft_bridge_port.config.serialization import from_dict, yaml_to_dict
    from sft_bridge_port.utils.ckpt_layout import CONFIG_FILE

    path = Path(iter_dir) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} is missing: the checkpoint does not say which model it holds. Checkpoints written by "
            f"import or by training have it; for a Megatron-LM checkpoint, write one with a 'model:' section."
        )
    data = yaml_to_dict(path.read_text())
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"{path} has no 'model:' section (the model provider)")
    provider = from_dict(data["model"])
    # Conversion never runs backward: a checkpoint trained on a GPU records gradient_accumulation_fusion=True
    # (see GPTModelProvider.cuda_fast_kernels), which megatron-core cannot honour on a CPU and does not need here.
    provider.gradient_accumulation_fusion = False
    return provider


def stored_embedding(iter_dir: str | os.PathLike) -> tuple[int, torch.dtype]:
    """(rows, dtype) of the embedding as saved, read from the torch_dist metadata without loading weights.

    Rows include the vocab padding of the layout the checkpoint was written at; the model rebuilt for export
    must have exactly as many rows for dist_checkpointing to load it.
    """
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(iter_dir)).read_metadata().state_dict_metadata
    if EMBEDDING_KEY not in meta:
        raise ValueError(f"{iter_dir} holds no {EMBEDDING_KEY}; tensors present: {sorted(meta)[:8]}")
    entry = meta[EMBEDDING_KEY]
    return int(entry.size[0]), entry.properties.dtype


def export_megatron_to_hf(
    megatron_path: str | os.PathLike,
    hf_path: str | os.PathLike,
    hf_config_source: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    show_progress: bool = True,
) -> Path:
    """Write the HF folder for a Megatron checkpoint (root with tracker, or an ``iter_*`` folder).

    Args:
        megatron_path: checkpoint root or iteration folder.
        hf_path: output folder (must not exist unless ``overwrite``).
        hf_config_source: an HF folder whose config.json / generation_config.json (and tokenizer, when the
            checkpoint has none) are copied verbatim instead of being derived from the provider.
        max_shard_bytes: safetensors shard size; above it the output is sharded with an index.

    Returns:
        ``hf_path`` as a Path.
    """
    from sft_bridge_port.utils.ckpt_layout import TOKENIZER_DIR, atomic_directory, resolve_checkpoint
    from sft_bridge_port.utils.dist_ckpt import load_model_weights
    from sft_bridge_port.utils.dist_context import parallel_context

    _require_world_of_one("export_megatron_to_hf")
    iter_dir, _ = resolve_checkpoint(megatron_path)
    provider = load_provider(iter_dir)
    rows, dtype = stored_embedding(iter_dir)
    shape = ModelShape.from_provider(provider, rows)
    table = get_table(_architecture(provider))
    with parallel_context(1, 1, backend="gloo"):
        model = build_tp1_model(provider, rows, dtype)
        load_model_weights([model], iter_dir, strict=True)
        with atomic_directory(hf_path, overwrite=overwrite) as tmp:
            bar = progress_bar(show_progress, "export: megatron -> HF")
            write_safetensors(bar(iter_hf_tensors(model, table, shape, dtype)), tmp, max_shard_bytes)
            write_hf_config(tmp, provider, dtype, hf_config_source)
            if not copy_tokenizer(iter_dir / TOKENIZER_DIR, tmp) and hf_config_source is not None:
                copy_tokenizer(hf_config_source, tmp)
        del model
    return Path(hf_path)


def _architecture(provider: Any) -> str:
    arch = getattr(provider, "hf_architecture", None)
    if arch:
        return arch
    from sft_bridge_port.models import hf_config_from_provider

    return hf_config_from_provider(provider)["architectures"][0]


def write_hf_config(out: Path, provider: Any, dtype: torch.dtype, source: str | os.PathLike | None = None) -> None:
    """config.json + generation_config.json: copied from ``source``, else derived from the provider."""
    if source is not None:
        read_config(source)  # fail early, naming the file, when the source is not an HF folder
        shutil.copy2(Path(source) / CONFIG_NAME, out / CONFIG_NAME)
        if (Path(source) / GENERATION_CONFIG_NAME).is_file():
            shutil.copy2(Path(source) / GENERATION_CONFIG_NAME, out / GENERATION_CONFIG_NAME)
            return
        cfg = read_config(source)
    else:
        from sft_bridge_port.models import hf_config_from_provider

        cfg = hf_config_from_provider(provider)
        cfg["torch_dtype"] = str(dtype).replace("torch.", "")
        cfg.setdefault("tie_word_embeddings", bool(provider.share_embeddings_and_output_weights))
        (out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.get(k) is not None}
    (out / GENERATION_CONFIG_NAME).write_text(json.dumps(gen, indent=2, sort_keys=True) + "\n")


def save_hf_pretrained(
    model: torch.nn.Module | Sequence[torch.nn.Module],
    hf_path: str | os.PathLike,
    provider: Any = None,
    hf_config_source: str | os.PathLike | None = None,
    tokenizer_source: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Write an in-memory, unsharded (TP=1, PP=1) megatron model as an HF folder.

    ``provider`` defaults to the model's config (a ``GPTModelProvider`` when built by one). For a model
    trained at TP/PP > 1, save a checkpoint and use :func:`export_megatron_to_hf`, which reshards.
    """
    from sft_bridge_port.utils.ckpt_layout import atomic_directory

    chunks = list(model) if isinstance(model, (list, tuple)) else [model]
    if len(chunks) != 1 or unwrap(chunks[0]).config.tensor_model_parallel_size > 1 or unwrap(chunks[0]).config.pipeline_model_parallel_size > 1:
        raise ValueError(
            "save_hf_pretrained takes one unsharded model (TP=1, PP=1, no virtual stages); for a sharded model "
            "save a checkpoint and run export_megatron_to_hf / AutoBridge.export_ckpt, which reshards."
        )
    module = unwrap(chunks[0])
    provider = provider or module.config
    emb = dict(module.named_parameters())[EMBEDDING_KEY]
    shape = ModelShape.from_provider(provider, emb.shape[0])
    table = get_table(_architecture(provider))
    with atomic_directory(hf_path, overwrite=overwrite) as tmp:
        write_safetensors(iter_hf_tensors(module, table, shape, emb.dtype), tmp, max_shard_bytes)
        write_hf_config(tmp, provider, emb.dtype, hf_config_source)
        if tokenizer_source is not None:
            copy_tokenizer(tokenizer_source, tmp)
    return Path(hf_path)
