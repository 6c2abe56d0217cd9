"""The equivalence runs: model sizes, parallel layouts, and one training run as a function.

Every run trains the same Llama-architecture model from the same imported weights (a Megatron checkpoint written
once by :func:`prepare`, loaded and resharded by each layout) on the same packed demo chats, with the same global
batch, and records the per-step ``lm loss`` and ``grad_norm`` that the engine logs (``metrics.jsonl`` records,
taken through a training callback on the logging rank).

Layouts (``LAYOUTS``), each compared with the single-device reference ``ref``::

    dp2            DP=2                       tp2_sp       TP=2 + sequence parallel (saves at half way)
    pp2            PP=2 (cu_seqlens on both)  dp2_distopt  DP=2 + distributed optimizer
    dp2_tp2_sp     DP=2 x TP=2 (4 devices)    cp2          CP=2, pad_seq_to_mult=4 (vs ref_pad4)
    resume_pp2     PP=2 resumed from tp2_sp's half-way checkpoint (vs tp2_sp's second half)
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import traceback
from pathlib import Path
from typing import Any

import torch

# HF config.json values per size; ``seq`` is the packed sequence length, ``gbs`` the global batch (packs).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, seq=128, gbs=4),
    "gpu": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8, num_attention_heads=16,
                num_key_value_heads=4, seq=512, gbs=8),
}
VOCAB = 512  # requested tiny-tokenizer size; the model's vocabulary is the tokenizer's length


@dataclasses.dataclass(frozen=True)
class Layout:
    """One parallel layout. ``reference`` names the run it is compared with; ``resume_from`` a run whose
    half-way checkpoint this one resumes from (then only the second half of the steps is compared)."""

    nproc: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    pad_seq_to_mult: int = 1
    reference: str | None = "ref"
    resume_from: str | None = None
    save_half_way: bool = False
    description: str = ""


LAYOUTS: dict[str, Layout] = {
    "ref": Layout(reference=None, description="1 device (reference)"),
    "ref_pad4": Layout(pad_seq_to_mult=4, reference=None, description="1 device, pad_seq_to_mult=4 (CP reference)"),
    "dp2": Layout(nproc=2, description="DP=2"),
    "tp2_sp": Layout(nproc=2, tp=2, sequence_parallel=True, save_half_way=True, description="TP=2 + SP"),
    "pp2": Layout(nproc=2, pp=2, description="PP=2 (packed: cu_seqlens on every stage)"),
    "dp2_distopt": Layout(nproc=2, distributed_optimizer=True, description="DP=2 + distributed optimizer"),
    "dp2_tp2_sp": Layout(nproc=4, tp=2, sequence_parallel=True, description="DP=2 x TP=2 + SP"),
    "cp2": Layout(nproc=2, cp=2, pad_seq_to_mult=4, reference="ref_pad4", description="CP=2, pad_seq_to_mult=4"),
    "resume_pp2": Layout(nproc=2, pp=2, reference="tp2_sp", resume_from="tp2_sp",
                         description="save at TP=2 step N/2, resume at PP=2"),
}


def demo_texts() -> list[str]:
    from sft_bridge_port.demo_stages import demo_chat_texts

    return demo_chat_texts()


PACK_VARIANTS = ((1, False), (1, True), (4, False), (4, True))  # (pad_seq_to_mult, pad_to_max_length)


def prepare(work: Path, size: str, pack_variants: tuple[tuple[int, bool], ...] = PACK_VARIANTS) -> None:
    """Tokenizer + random HF model (seed 0) + its Megatron import + the packed-data caches, all under ``work``.

    Runs as one plain process before any layout, so every run reads the same files and none writes shared ones.
    """
    from checkpoints_conv import import_hf_to_megatron
    from sft_bridge_port.data import build_sft_data_iterators, load_tokenizer
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer
    from sft_bridge_port.models.tiny import make_tiny_hf_model
    from sft_bridge_port.utils.dist_context import destroy_distributed
    from recipes.tiny import DEMO_DATA_DIR

    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    data.mkdir(exist_ok=True)
    for name in ("training.jsonl", "validation.jsonl"):
        shutil.copyfile(DEMO_DATA_DIR / name, data / name)
    arch = {k: v for k, v in SIZES[size].items() if k not in ("seq", "gbs")}
    tok = build_tiny_tokenizer(work / "hf", demo_texts(), vocab_size=VOCAB)
    make_tiny_hf_model(work / "hf", "llama", vocab_size=len(tok), seed=0, rope_scaling=None, rope_theta=10000.0,
                       max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **arch)
    import_hf_to_megatron(work / "hf", work / "megatron", overwrite=True, show_progress=False)
    destroy_distributed()
    tok = load_tokenizer(str(work / "hf"))  # as the runs load it: the cache path names the tokenizer folder
    for mult, full_length in pack_variants:  # PP/SP/CP layouts pad batches to full length (another cache key)
        cfg = dataclasses.replace(dataset_config(work, size, mult), pad_to_max_length=full_length)
        build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)


def dataset_config(work: Path, size: str, pad_seq_to_mult: int = 1):
    from sft_bridge_port.data import FinetuningDatasetConfig, PackedSequenceSpecs

    seq = SIZES[size]["seq"]
    return FinetuningDatasetConfig(
        dataset_root=str(work / "data"), seq_length=seq, seed=1234, num_workers=0, do_validation=False,
        do_test=False, packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=seq, pad_seq_to_mult=pad_seq_to_mult),
    )  # fmt: skip


def build_config(work: Path, size: str, name: str, precision: str, steps: int, run_dir: Path):
    """The ConfigContainer of one run (same optimizer, schedule, data and starting weights for every layout)."""
    from sft_bridge_port.config import (
        CheckpointConfig, ConfigContainer, LoggerConfig, OptimizerConfig, SchedulerConfig, TokenizerConfig,
        TrainingConfig,
    )  # fmt: skip
    from sft_bridge_port.models import get_provider

    lay = LAYOUTS[name]
    seq = SIZES[size]["seq"]
    provider = get_provider(
        work / "hf", seq_length=seq, tensor_model_parallel_size=lay.tp, pipeline_model_parallel_size=lay.pp,
        context_parallel_size=lay.cp, sequence_parallel=lay.sequence_parallel, hidden_dropout=0.0,
        attention_dropout=0.0, params_dtype=torch.float32, bf16=False, fp16=False,
    )  # fmt: skip
    ckpt = CheckpointConfig(pretrained_checkpoint=str(work / "megatron"), fully_parallel_save=False)
    if lay.save_half_way:
        ckpt.save, ckpt.save_interval = str(run_dir / "checkpoints"), steps // 2
    if lay.resume_from:
        ckpt.load = str(run_dir.parent / f"{precision}-{lay.resume_from}" / "checkpoints")
        ckpt.ckpt_step = steps // 2
    return ConfigContainer(
        train=TrainingConfig(train_iters=steps, global_batch_size=SIZES[size]["gbs"], micro_batch_size=1),
        model=provider,
        optimizer=OptimizerConfig(lr=3e-4, min_lr=3e-5, weight_decay=0.01, clip_grad=1.0, bf16=False, fp16=False,
                                  use_distributed_optimizer=lay.distributed_optimizer),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=min(2, steps - 1)),
        dataset=dataset_config(work, size, lay.pad_seq_to_mult),
        logger=LoggerConfig(log_interval=1),
        tokenizer=TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(work / "hf")),
        checkpoint=ckpt,
        mixed_precision="bf16_mixed" if precision == "bf16" else None,
    )  # fmt: skip


class _Recorder:
    """Training callback keeping the logged per-step records (only the logging rank receives them)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def on_train_step_end(self, state: Any, record: dict[str, Any] | None) -> None:
        if record is not None and record.get("kind") == "train":
            self.steps.append({"iteration": record["iteration"], "lm loss": record["lm loss"],
                               "grad_norm": record["grad_norm"], "skipped": record["skipped"]})


def _unsupported(exc: BaseException) -> bool:
    """A ValueError the engine raises for a layout it does not support (packed + CP needs TE's THD split)."""
    return isinstance(exc, ValueError) and "context_parallel" in str(exc)


def run_one(work: Path, size: str, name: str, precision: str, steps: int) -> dict[str, Any]:
    """Train one layout in this process group (all ranks call it); returns the result on every rank.

    The result is ``{"config", "precision", "status": "ok" | "not supported" | "error", "steps": [...],
    "message"}``; the last rank (the one holding the loss) also writes it to ``runs/<precision>-<name>/result.json``.
    """
    from sft_bridge_port.training import finetune
    from sft_bridge_port.training.gpt_step import forward_step

    run_dir = work / "runs" / f"{precision}-{name}"
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if rank == 0 and run_dir.exists():
        shutil.rmtree(run_dir)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chdir(run_dir)  # metrics.jsonl goes to the working directory when checkpoint.save is unset
    recorder = _Recorder()
    result: dict[str, Any] = {"config": name, "precision": precision, "size": size, "world_size": world}
    try:
        finetune(build_config(work, size, name, precision, steps, run_dir), forward_step, callbacks=[recorder])
        result.update(status="ok", steps=recorder.steps)
    except Exception as exc:  # recorded, not raised: the next layout still runs
        result.update(status="not supported" if _unsupported(exc) else "error", steps=recorder.steps,
                      message=f"{type(exc).__name__}: {exc}")
        if not _unsupported(exc):
            traceback.print_exc()
    finally:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if rank == world - 1:
        (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result
