"""Everything between a resolved config and the first training step.

``setup(cfg)`` runs, in order: process group (``cfg.dist``) -> import an HF ``pretrained_checkpoint`` once (before
parallel state exists, because conversion builds its own) -> megatron parallel state and seeds (``cfg.model``
TP/PP/VPP/CP, ``cfg.rng``) -> tokenizer -> model chunks via the provider, with pretrained weights and PEFT applied
before DDP wrapping -> optimizer + scheduler -> resume from ``checkpoint.load`` -> data iterators (skipping the
samples a resumed run already consumed) -> metrics logger.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from sft_bridge_port.peft import apply_peft_for_training
from sft_bridge_port.training import checkpointing
from sft_bridge_port.training.flops import peak_tflops
from sft_bridge_port.training.losses import spike_monitor
from sft_bridge_port.training.metrics import MetricsLogger, Throughput
from sft_bridge_port.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler
from sft_bridge_port.training.pretrained import resolve_pretrained
from sft_bridge_port.training.state import GlobalState
from sft_bridge_port.training.train import LoopSpec, num_microbatches
from sft_bridge_port.utils import ckpt_layout
from sft_bridge_port.utils.dist_context import init_distributed, initialize_parallel_state
from sft_bridge_port.utils.dist_ckpt import load_model_weights

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SetupOutput:
    state: GlobalState
    model: list[torch.nn.Module]
    optimizer: Any
    scheduler: Any
    train_iterator: Iterator
    valid_iterator_fn: Callable[[], Iterator] | None
    spec: LoopSpec


def run_directory(cfg: Any) -> Path:
    """Where ``metrics.jsonl`` goes: the parent of ``checkpoint.save`` (Bridge's ``<dir>/<name>/checkpoints``),
    else of ``logger.tensorboard_dir``, else the working directory."""
    for path in (cfg.checkpoint.save, cfg.logger.tensorboard_dir):
        if path:
            return Path(path).resolve().parent
    return Path.cwd()


def _seed(seed: int) -> None:
    from megatron.core import parallel_state

    seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_tokenizer(cfg: Any):
    if getattr(cfg.tokenizer, "tokenizer_model", None) is None:
        return None
    from sft_bridge_port.data import load_tokenizer

    return load_tokenizer(cfg.tokenizer)


def build_model(cfg: Any, pretrained_dir: Path | None) -> list[torch.nn.Module]:
    """Model chunks from ``cfg.model``; pretrained weights and PEFT are applied before DDP wrapping.

    With ``cfg.peft`` the base weights always come from ``pretrained_dir`` (also on resume: a PEFT checkpoint
    holds only the adapters), then the adapters are attached and the base frozen, so DDP and the optimizer see
    only adapter parameters.

    ``calculate_per_token_loss=True`` is set here, before DDP reads it: gradients are then normalised once by
    the global supervised-token count (see :mod:`sft_bridge_port.training.train`).
    """
    provider = cfg.model
    provider.calculate_per_token_loss = True
    cfg.ddp.average_in_collective = False  # megatron's DDP rejects averaging together with per-token loss

    if cfg.peft is not None:  # base weights, then adapters (DoRA's magnitude starts from the base weights)
        pre_wrap_hook = functools.partial(apply_peft_for_training, cfg.peft, pretrained_checkpoint=pretrained_dir)
    else:

        def pre_wrap_hook(chunks: list[torch.nn.Module]) -> list[torch.nn.Module]:
            if pretrained_dir is not None:
                load_model_weights(chunks, pretrained_dir, strict=True)
            return chunks

    return provider.provide_distributed_model(
        ddp_config=cfg.ddp,
        fp16=getattr(provider, "fp16", None),
        bf16=getattr(provider, "bf16", None),
        pre_wrap_hook=pre_wrap_hook,
        data_parallel_random_init=getattr(cfg.rng, "data_parallel_random_init", False),
    )


def build_data(cfg: Any, tokenizer: Any, consumed_train_samples: int):
    """``(train iterator, valid-iterator factory or None)`` for this data-parallel rank.

    A dataset config with a ``build_iterators(...)`` method is used as is (any provider yielding Bridge-format
    batches); otherwise ``sft_bridge_port.data.build_sft_data_iterators``.
    """
    from megatron.core import parallel_state

    kwargs = dict(
        micro_batch_size=cfg.train.micro_batch_size,
        data_parallel_rank=parallel_state.get_data_parallel_rank(),
        data_parallel_size=parallel_state.get_data_parallel_world_size(),
        consumed_train_samples=consumed_train_samples,
    )
    if cfg.dataset is None:
        raise ValueError("cfg.dataset is None: set a dataset config (e.g. sft_bridge_port.data.default_squad_config())")
    if callable(getattr(cfg.dataset, "build_iterators", None)):
        its = cfg.dataset.build_iterators(tokenizer=tokenizer, **kwargs)
    else:
        from sft_bridge_port.data import build_sft_data_iterators
        from sft_bridge_port.training.batch import fixed_length_dataset

        its = build_sft_data_iterators(fixed_length_dataset(cfg.dataset, cfg.model), tokenizer, **kwargs)
    return its.train, its.valid


def setup(cfg: Any) -> SetupOutput:
    """Build the run described by a ``runtime_config_update``-d config (all ranks call this).

    Raises:
        ValueError: ``cfg.peft`` is set without ``checkpoint.pretrained_checkpoint``.
    """
    _check_peft_base(cfg)
    init_distributed(cfg.dist.distributed_backend, cfg.dist.distributed_timeout_minutes)
    pretrained = resolve_pretrained(cfg)
    m = cfg.model
    initialize_parallel_state(
        m.tensor_model_parallel_size, m.pipeline_model_parallel_size,
        m.virtual_pipeline_model_parallel_size, m.context_parallel_size, seed=cfg.rng.seed,
    )  # fmt: skip
    _seed(cfg.rng.seed)
    spike_monitor.factor = getattr(cfg.rerun_state_machine, "spiky_loss_factor", spike_monitor.factor)
    state = GlobalState(cfg=cfg, tokenizer=_load_tokenizer(cfg), run_dir=run_directory(cfg))
    resume = cfg.checkpoint.load is not None and _has_checkpoint(cfg.checkpoint.load)
    model = build_model(cfg, None if (resume and cfg.peft is None) else pretrained)
    optimizer = build_optimizer(cfg.optimizer, model)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.optimizer, cfg.train.train_iters, cfg.train.global_batch_size)
    attach_schedule_hooks(model, optimizer)
    if resume:
        checkpointing.load_checkpoint(state, model, optimizer, scheduler, cfg.checkpoint.load, cfg.checkpoint.ckpt_step)
    from megatron.core import parallel_state

    dp = parallel_state.get_data_parallel_world_size()
    spec = LoopSpec(
        num_microbatches(cfg.train.global_batch_size, cfg.train.micro_batch_size, dp),
        cfg.train.micro_batch_size, cfg.train.global_batch_size, int(getattr(m, "seq_length", 0) or 0),
    )  # fmt: skip
    train_it, valid_fn = build_data(cfg, state.tokenizer, state.train_state.consumed_train_samples)
    state.metrics = _metrics_logger(cfg, state.run_dir, model)
    return SetupOutput(state, model, optimizer, scheduler, train_it, valid_fn, spec)


def _check_peft_base(cfg: Any) -> None:
    """PEFT trains adapters on frozen base weights, which only ``pretrained_checkpoint`` provides (Bridge's rule,
    also when resuming: PEFT checkpoints hold only the adapters)."""
    if cfg.peft is not None and cfg.checkpoint.pretrained_checkpoint is None:
        raise ValueError(
            f"cfg.peft is {type(cfg.peft).__name__} but cfg.checkpoint.pretrained_checkpoint is None: PEFT needs the "
            f"base model's weights (also when resuming, as PEFT checkpoints hold only the adapters). Set "
            f"checkpoint.pretrained_checkpoint to a Megatron checkpoint or a Hugging Face model folder, or peft=null "
            f"for full finetuning."
        )


def _has_checkpoint(path: str) -> bool:
    """True when ``checkpoint.load`` holds a checkpoint; an empty or absent folder means a fresh start (Bridge)."""
    p = Path(path)
    if not p.exists() or (p.is_dir() and not any(p.iterdir())):
        return False
    ckpt_layout.resolve_checkpoint(p)  # raises a clear error for a broken tracker / incomplete folder
    return True


def _metrics_logger(cfg: Any, run_dir: Path, model: list[torch.nn.Module]) -> MetricsLogger:
    from megatron.core.utils import get_model_config

    from sft_bridge_port.utils.dist_ckpt import unwrap

    log = MetricsLogger(
        run_dir, log_interval=cfg.logger.log_interval, train_iters=cfg.train.train_iters,
        tensorboard_dir=cfg.logger.tensorboard_dir, wandb_project=cfg.logger.wandb_project,
        wandb_exp_name=cfg.logger.wandb_exp_name, wandb_entity=cfg.logger.wandb_entity,
        wandb_save_dir=cfg.logger.wandb_save_dir,
    )  # fmt: skip
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    vocab = getattr(unwrap(model[0]), "vocab_size", 0) or 0
    log.throughput = Throughput(get_model_config(model[0]), vocab, world, peak_tflops())
    return log
