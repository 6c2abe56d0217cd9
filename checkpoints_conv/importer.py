"""HF folder -> megatron-core torch_dist checkpoint in Bridge's layout, and HF -> an already built model.

Output layout (as Megatron-Bridge's ``import_ckpt``)::

    <megatron_path>/
      latest_checkpointed_iteration.txt     # "0"
      iter_0000000/
        .metadata, __0_0.distcp, metadata.json, common.pt   # dist_checkpointing (torch_dist), key "model";
                                                            # common.pt only from megatron-core < 0.19
        run_config.yaml                                      # model: the provider (_target_ style)
        tokenizer/                                           # tokenizer files copied from the HF folder

The weights are written from a world of one at TP=1/PP=1; the target TP/PP go into the provider. torch_dist
checkpoints are resharded on load, so training at the target layout (or any other whose vocab padding
matches) loads them directly. The whole folder is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from checkpoints_conv import engine
from checkpoints_conv.hf_io import SafetensorsReader, copy_tokenizer, read_config, resolve_hf_folder
from checkpoints_conv.mapping import ModelShape, shape_from_hf_config
from checkpoints_conv.model_io import build_tp1_model, load_rows
from checkpoints_conv.progress import progress_bar
from checkpoints_conv.state_dicts import check_no_leftovers
from checkpoints_conv.stream_save import StreamingUnsupported, check_hf_shapes, save_streaming
from checkpoints_conv.tables import get_table
from sft_bridge_port.utils.dist_ckpt import unwrap

logger = logging.getLogger(__name__)
DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"`` / ``"bfloat16"`` / ``torch.bfloat16`` -> ``torch.bfloat16``; None stays None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    return DTYPES[str(dtype)]


def prepare_provider(folder: Path, tp: int, pp: int, dtype: torch.dtype) -> Any:
    """The provider recorded in run_config.yaml: config.json's model at the target TP/PP and dtype."""
    from sft_bridge_port.models import get_provider

    provider = get_provider(folder)
    provider.tensor_model_parallel_size = tp
    provider.pipeline_model_parallel_size = pp
    provider.params_dtype = dtype
    provider.bf16, provider.fp16 = dtype == torch.bfloat16, dtype == torch.float16
    if pp > 1 and provider.pipeline_dtype is None:
        provider.pipeline_dtype = dtype  # megatron-core requires it as soon as PP > 1
    if not provider.should_pad_vocab and provider.vocab_size % tp:
        logger.info("vocab %d does not split over TP %d: padding it", provider.vocab_size, tp)
        provider.should_pad_vocab = True
    return provider


def check_provider_matches_config(shape: ModelShape, cfg: dict, folder: Path) -> None:
    """The provider must describe the same tensors as config.json (else shapes would be misread)."""
    want = shape_from_hf_config(cfg, shape.padded_vocab_size)
    if want != shape:
        diff = {k: (getattr(want, k), getattr(shape, k)) for k in want.__dataclass_fields__ if getattr(want, k) != getattr(shape, k)}
        raise ValueError(f"{folder}/config.json and the provider built from it disagree (config, provider): {diff}")


def import_hf_to_megatron(
    hf_path: str | os.PathLike,
    megatron_path: str | os.PathLike,
    tp: int = 1,
    pp: int = 1,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Convert an HF folder (or hub id) into a Megatron checkpoint for training at TP=``tp``, PP=``pp``.

    Args:
        hf_path: local HF folder with config.json + safetensors, or a hub id (downloaded).
        megatron_path: output checkpoint root (must not exist unless ``overwrite``).
        tp, pp: the layout training will use; checked against heads, KV groups, FFN, vocab and layers.
        dtype: weights dtype (``"bf16"``, ``"fp32"``, ...); None keeps the safetensors dtype (bit-exact).

    Returns:
        ``megatron_path`` as a Path.

    Raises:
        ValueError: unsupported architecture, missing/extra/mis-shaped tensor, truncated file, TP/PP that do
            not divide the model; nothing is left at ``megatron_path`` then.
    """
    from sft_bridge_port.utils.ckpt_layout import TOKENIZER_DIR, atomic_directory, iter_dir_name, write_tracker

    _require_world_of_one("import_hf_to_megatron")
    folder = resolve_hf_folder(hf_path)
    cfg = read_config(folder)
    table = get_table((cfg.get("architectures") or ["<none>"])[0])
    with SafetensorsReader(folder, max_open_files=1) as reader:
        embed = engine.active_rows(table, shape_from_hf_config(cfg))[0].hf[0]
        dtype = parse_dtype(dtype) or reader.get(embed).dtype
        provider = prepare_provider(folder, tp, pp, dtype)
        shape = ModelShape.from_provider(provider, provider.padded_vocab_size())
        check_provider_matches_config(shape, cfg, folder)
        engine.check_tp_divides(shape, tp)
        engine.check_pp_divides(shape, pp)
        check_no_leftovers(table, shape, reader)
        check_hf_shapes(table, shape, reader)
        with atomic_directory(megatron_path, overwrite=overwrite) as tmp:
            iter_dir = tmp / iter_dir_name(0)
            _convert_and_save(provider, table, shape, reader, dtype, iter_dir, show_progress)
            write_run_config(provider, iter_dir)
            copy_tokenizer(folder, iter_dir / TOKENIZER_DIR)
            write_tracker(tmp, 0)
    return Path(megatron_path)


def _convert_and_save(provider, table, shape, reader, dtype, iter_dir: Path, show_progress: bool) -> None:
    """Stream the converted weights into ``iter_dir``: the model is built on ``meta`` only for its sharded
    state dict (checkpoint keys and shapes); each tensor is converted from the HF files while it is written,
    so peak memory is one mapped HF shard plus one converted row, not the model.

    ``load_rows`` on a meta model still checks that the table fills every parameter with the right shape.
    When streaming is unsupported (a megatron-core whose writer API differs, a tensor that is not a view of
    one parameter) the whole model is built on the CPU, filled and saved instead, with a warning saying why.
    """
    from sft_bridge_port.utils.dist_context import parallel_context

    bar = progress_bar(show_progress, "import: HF -> megatron")
    with parallel_context(1, 1, backend="gloo"):
        with torch.device("meta"):
            model = build_tp1_model(provider, shape.padded_vocab_size, dtype)
        load_rows(model, table, shape, _meta_reader(reader), reader.file_of)
        try:
            save_streaming(model, table, shape, reader, iter_dir, progress=bar)
            return
        except StreamingUnsupported as exc:
            logger.warning("streaming import unavailable (%s): converting with the whole model in memory", exc)
        del model
        _convert_in_memory(provider, table, shape, reader, dtype, iter_dir, bar)


def _convert_in_memory(provider, table, shape, reader, dtype, iter_dir: Path, bar) -> None:
    """The fallback: a full CPU model filled from HF and saved by megatron (peak memory: the model)."""
    from sft_bridge_port.utils.dist_ckpt import save_model_weights

    model = build_tp1_model(provider, shape.padded_vocab_size, dtype)
    load_rows(model, table, shape, reader.get, reader.file_of, progress=bar)
    save_model_weights([model], iter_dir)


def _meta_reader(reader: SafetensorsReader):
    """HF tensors as meta tensors of their header shape: lets ``load_rows`` check a meta model for free."""
    return lambda name: torch.empty(reader.shape(name), device="meta")


def write_run_config(provider: Any, iter_dir: Path) -> None:
    """``run_config.yaml`` with a ``model:`` section (the provider, ``_target_`` style) as Bridge writes it."""
    from sft_bridge_port.config.serialization import to_yaml
    from sft_bridge_port.utils.ckpt_layout import CONFIG_FILE

    (iter_dir / CONFIG_FILE).write_text(to_yaml({"model": provider}))


def load_hf_weights_into_model(model_chunks: Sequence[torch.nn.Module] | torch.nn.Module, hf_path: str | os.PathLike) -> None:
    """Fill already built (possibly TP/PP-sharded, DDP-wrapped) model chunks from an HF folder, in memory.

    Each rank reads the HF tensors its chunks need and keeps its own TP slice; the tables, shape checks and
    vocab padding are those of :func:`import_hf_to_megatron`. Use it to finetune straight from an HF folder.
    """
    from megatron.core import parallel_state

    chunks = list(model_chunks) if isinstance(model_chunks, (list, tuple)) else [model_chunks]
    folder = resolve_hf_folder(hf_path)
    cfg = read_config(folder)
    table = get_table((cfg.get("architectures") or ["<none>"])[0])
    tp_size = parallel_state.get_tensor_model_parallel_world_size() if parallel_state.model_parallel_is_initialized() else 1
    tp_rank = parallel_state.get_tensor_model_parallel_rank() if tp_size > 1 else 0
    local_rows = _embedding_rows(chunks)
    # The model's own (padded) vocab rows; a middle pipeline stage holds no vocab tensor at all.
    shape = shape_from_hf_config(cfg, local_rows * tp_size if local_rows else None)
    with SafetensorsReader(folder) as reader:
        check_no_leftovers(table, shape, reader)
        for chunk in chunks:
            load_rows(chunk, table, shape, reader.get, reader.file_of, tp_rank, tp_size)


def _embedding_rows(chunks: Sequence[torch.nn.Module]) -> int | None:
    for chunk in chunks:
        for name, p in unwrap(chunk).named_parameters():
            if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
                return p.shape[0]
    return None


def _require_world_of_one(what: str) -> None:
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise ValueError(
            f"{what} writes a checkpoint from a world of one; call it before torch.distributed is initialised "
            f"(or in a separate process), or use load_hf_weights_into_model() inside a distributed run."
        )
