"""``runtime_config_update(cfg)``: resolve a config's effective values once, then validate (Bridge's rules).

Recipes and users may set fields in any order; this is the single place where one field's value follows from
others. It is idempotent (a second call changes nothing) and is called by ``finetune()``. The rules, as in
Megatron-Bridge v0.5:

* ``mixed_precision`` (name or object) is resolved and copied onto model/optimizer/ddp fields of the same name
  (``bf16_mixed`` therefore sets ``ddp.grad_reduce_in_fp32=True``);
* ``ddp.use_distributed_optimizer`` and ``optimizer.use_distributed_optimizer`` are OR-ed;
* ``train.train_samples`` -> ``train.train_iters = train_samples // global_batch_size``;
* ``data_parallel_size = world_size // (TP x PP x CP)``; GBS must be a multiple of MBS x DP;
* packed sequences need ``micro_batch_size == 1``;
* context parallel (CP > 1) needs ``seq_length % (2 x CP) == 0`` and switches on
  ``model.calculate_per_token_loss`` (and off ``ddp.average_in_collective``);
* ``scheduler.lr_decay_iters=None`` -> ``train_iters``; ``start/end_weight_decay=None`` -> ``optimizer.weight_decay``;
  the scheduler's ``*_steps`` are those iterations x global batch size.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Optional

from sft_bridge_port.config.mixed_precision import get_mixed_precision_config

logger = logging.getLogger(__name__)


def runtime_config_update(cfg: Any, world_size: Optional[int] = None) -> Any:
    """Resolve derived values of ``cfg`` in place, validate it, and return it.

    Args:
        cfg: a :class:`~sft_bridge_port.config.ConfigContainer`.
        world_size: number of processes; default: torch.distributed's world size, else ``$WORLD_SIZE``, else 1.

    Raises:
        ValueError: a rule is violated; the message names the fields, their values and the fix.
    """
    _migrate_deprecated_eval_fields(cfg)
    if cfg.mixed_precision is not None:
        cfg.mixed_precision = get_mixed_precision_config(cfg.mixed_precision)
        cfg.mixed_precision.finalize()
        cfg.mixed_precision.setup(cfg.model, cfg.optimizer, cfg.ddp)
    if cfg.comm_overlap is not None:
        cfg.comm_overlap.setup(cfg.model, cfg.optimizer, cfg.ddp)
    _sync_distributed_optimizer(cfg)
    _resolve_train_iters(cfg.train)
    cfg.data_parallel_size = data_parallel_size(cfg, _world_size(world_size))
    _context_parallel_loss(cfg)
    for sub in (cfg.model, cfg.optimizer, cfg.ddp):
        if hasattr(sub, "finalize"):
            sub.finalize()
    _scheduler_steps(cfg)
    validate(cfg)
    return cfg


def validate(cfg: Any) -> None:
    """Check the cross-field rules; reads only (derived values come from :func:`runtime_config_update`)."""
    train = cfg.train
    for name in ("micro_batch_size", "global_batch_size", "train_iters"):
        value = getattr(train, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"cfg.train.{name} must be a positive integer, got {value!r}")
    if getattr(cfg.optimizer, "lr", None) is None:
        raise ValueError("cfg.optimizer.lr is None: set the peak learning rate (e.g. optimizer.lr=5e-6)")
    dp = cfg.data_parallel_size or 1
    if train.global_batch_size % (train.micro_batch_size * dp) != 0:
        raise ValueError(
            f"cfg.train.global_batch_size={train.global_batch_size} must be a multiple of cfg.train.micro_batch_size="
            f"{train.micro_batch_size} x data-parallel size {dp}; change one of them"
        )
    if is_packed(cfg.dataset) and train.micro_batch_size != 1:
        size = cfg.dataset.packed_sequence_specs.packed_sequence_size
        raise ValueError(
            f"packed sequences need cfg.train.micro_batch_size=1 (got {train.micro_batch_size}); to fit more tokens "
            f"per micro-batch raise packed_sequence_size instead (now {size}, e.g. {size} x {train.micro_batch_size})"
        )
    cp = _model_int(cfg.model, "context_parallel_size")
    if cp > 1:
        for owner, seq in (("model", getattr(cfg.model, "seq_length", None)), ("dataset", _dataset_seq(cfg.dataset))):
            if seq is not None and seq % (2 * cp) != 0:
                raise ValueError(
                    f"cfg.{owner}.seq_length={seq} must be divisible by 2 x context_parallel_size = {2 * cp}"
                )
        if not getattr(cfg.model, "calculate_per_token_loss", False) or getattr(cfg.ddp, "average_in_collective", False):
            raise ValueError("context parallel needs model.calculate_per_token_loss=True and ddp.average_in_collective=False")
    pure_bf16 = not getattr(cfg.mixed_precision, "fp32_master_weights", True)
    for flag in ("bf16", "fp16"):
        model_flag, optim_flag = bool(getattr(cfg.model, flag, False)), bool(getattr(cfg.optimizer, flag, False))
        if flag == "bf16" and pure_bf16 and model_flag and not optim_flag:
            continue  # bf16_pure: a bf16 model under megatron-core's plain optimizer, on purpose
        if model_flag != optim_flag:
            raise ValueError(
                f"cfg.model.{flag}={model_flag} but cfg.optimizer.{flag}={optim_flag}: the optimizer's precision must "
                f"match the model's (a mismatch breaks checkpoint saving). Set mixed_precision (e.g. 'bf16_mixed', "
                f"which sets both) or optimizer.{flag}={model_flag}."
            )
    if bool(cfg.ddp.use_distributed_optimizer) != bool(cfg.optimizer.use_distributed_optimizer):
        raise ValueError("ddp.use_distributed_optimizer and optimizer.use_distributed_optimizer differ; set both")
    if pure_bf16 and cfg.optimizer.use_distributed_optimizer:
        raise ValueError(
            "mixed_precision 'bf16_pure' (fp32_master_weights=False) cannot run with the distributed optimizer, which "
            "always keeps fp32 master weights: set optimizer.use_distributed_optimizer=False and "
            "ddp.use_distributed_optimizer=False, or use mixed_precision='bf16_mixed'"
        )


def data_parallel_size(cfg: Any, world_size: int) -> int:
    """``world_size // (TP x PP x CP)``; raises when the world is not a multiple of the model-parallel size."""
    model_parallel = 1
    for name in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "context_parallel_size"):
        model_parallel *= _model_int(cfg.model, name)
    if world_size % model_parallel != 0:
        raise ValueError(
            f"world size {world_size} is not a multiple of tensor x pipeline x context parallel = {model_parallel}; "
            "launch a multiple of that many processes or lower the model parallel sizes"
        )
    return world_size // model_parallel


def is_packed(dataset: Any) -> bool:
    """Whether the dataset config packs several sequences per row (``packed_sequence_specs.packed_sequence_size > 0``)."""
    specs = getattr(dataset, "packed_sequence_specs", None)
    return specs is not None and (getattr(specs, "packed_sequence_size", -1) or -1) > 0


def _world_size(explicit: Optional[int]) -> int:
    if explicit is not None:
        return explicit
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def _model_int(model: Any, name: str) -> int:
    return int(getattr(model, name, 1) or 1)


def _dataset_seq(dataset: Any) -> Optional[int]:
    return getattr(dataset, "seq_length", None)


def _migrate_deprecated_eval_fields(cfg: Any) -> None:
    for name in ("eval_iters", "eval_interval", "skip_train"):
        value = getattr(cfg.train, name)
        if value is not None:
            warnings.warn(f"cfg.train.{name} is deprecated (Bridge <= v0.3); moved to cfg.validation.{name}", FutureWarning)
            setattr(cfg.validation, name, value)
            setattr(cfg.train, name, None)


def _sync_distributed_optimizer(cfg: Any) -> None:
    if cfg.ddp.use_distributed_optimizer or cfg.optimizer.use_distributed_optimizer:
        cfg.ddp.use_distributed_optimizer = True
        cfg.optimizer.use_distributed_optimizer = True


def _resolve_train_iters(train: Any) -> None:
    if train.train_samples is None:
        if train.train_iters is None:
            raise ValueError("set cfg.train.train_iters (or cfg.train.train_samples)")
        return
    if not train.global_batch_size:
        raise ValueError("cfg.train.train_samples needs cfg.train.global_batch_size to derive train_iters")
    iters = train.train_samples // train.global_batch_size
    if train.train_iters is not None and train.train_iters != iters:
        raise ValueError(
            f"cfg.train.train_iters={train.train_iters} and train_samples={train.train_samples} disagree "
            f"(samples // global_batch_size = {iters}); set only one of them"
        )
    train.train_iters = iters


def _context_parallel_loss(cfg: Any) -> None:
    if _model_int(cfg.model, "context_parallel_size") <= 1:
        return
    if not getattr(cfg.model, "calculate_per_token_loss", True) or getattr(cfg.ddp, "average_in_collective", False):
        logger.info("context parallel: setting model.calculate_per_token_loss=True, ddp.average_in_collective=False")
    cfg.model.calculate_per_token_loss = True
    cfg.ddp.average_in_collective = False


def _scheduler_steps(cfg: Any) -> None:
    sched, gbs, iters = cfg.scheduler, cfg.train.global_batch_size, cfg.train.train_iters
    if sched.lr_decay_iters is None:
        sched.lr_decay_iters = iters
    sched.lr_decay_steps = sched.lr_decay_iters * gbs
    sched.wd_incr_steps = iters * gbs
    sched.wsd_decay_steps = sched.lr_wsd_decay_iters * gbs if sched.lr_wsd_decay_iters is not None else None
    if sched.lr_warmup_fraction is not None:
        sched.lr_warmup_steps = int(sched.lr_warmup_fraction * sched.lr_decay_steps)
    else:
        sched.lr_warmup_steps = sched.lr_warmup_iters * gbs
    if sched.start_weight_decay is None:
        sched.start_weight_decay = cfg.optimizer.weight_decay
    if sched.end_weight_decay is None:
        sched.end_weight_decay = cfg.optimizer.weight_decay
