"""megatron-core optimizer and LR/WD scheduler from the config, and the hooks the schedules need.

The scheduler counts in **samples** (Megatron-LM's convention): it is stepped by ``global_batch_size`` after
every iteration, so ``lr_warmup_iters=50`` with GBS 8 means warm-up over 400 samples.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def build_optimizer(optimizer_cfg: Any, model_chunks: Sequence[torch.nn.Module]):
    """``get_megatron_optimizer(cfg.optimizer, model_chunks)``; the distributed optimizer when configured.

    Raises:
        ValueError: ``optimizer.lr`` is unset.
    """
    from megatron.core.optimizer import get_megatron_optimizer

    from sft_bridge_port.training.torch_kernels import (
        install_bf16_grad_clipping,
        install_foreach_fallbacks,
        install_vectorised_grad_scaling,
        use_fused_adamw,
    )

    if getattr(optimizer_cfg, "lr", None) is None:
        raise ValueError("optimizer.lr is not set; give the peak learning rate (e.g. cfg.optimizer.lr = 5e-6)")
    install_foreach_fallbacks()
    install_bf16_grad_clipping()
    install_vectorised_grad_scaling()
    optimizer = get_megatron_optimizer(optimizer_cfg, list(model_chunks))
    use_fused_adamw(optimizer)
    return optimizer


def scheduler_steps(scheduler_cfg: Any, train_iters: int, global_batch_size: int) -> dict[str, int | None]:
    """Warm-up / decay / WD-increment lengths in samples, from the derived fields or computed here.

    >>> scheduler_steps(SchedulerConfig(lr_warmup_iters=2), train_iters=10, global_batch_size=4)   # doctest: +SKIP
    {'lr_warmup_steps': 8, 'lr_decay_steps': 40, 'wd_incr_steps': 40, 'wsd_decay_steps': None}
    """
    s = scheduler_cfg
    decay = getattr(s, "lr_decay_steps", None)
    if decay is None:
        if getattr(s, "lr_decay_samples", None):
            decay = s.lr_decay_samples
        else:
            decay = (getattr(s, "lr_decay_iters", None) or train_iters) * global_batch_size
    warmup = getattr(s, "lr_warmup_steps", None)
    if warmup is None:
        if getattr(s, "lr_warmup_fraction", None) is not None:
            warmup = int(s.lr_warmup_fraction * decay)
        elif getattr(s, "lr_warmup_samples", 0):
            warmup = s.lr_warmup_samples
        else:
            warmup = (getattr(s, "lr_warmup_iters", 0) or 0) * global_batch_size
    wd_incr = getattr(s, "wd_incr_steps", None) or train_iters * global_batch_size
    wsd = getattr(s, "wsd_decay_steps", None)
    if wsd is None and getattr(s, "lr_wsd_decay_iters", None):
        wsd = s.lr_wsd_decay_iters * global_batch_size
    elif wsd is None and getattr(s, "lr_wsd_decay_samples", None):
        wsd = s.lr_wsd_decay_samples
    return {"lr_warmup_steps": int(warmup), "lr_decay_steps": int(decay), "wd_incr_steps": int(wd_incr),
            "wsd_decay_steps": wsd}  # fmt: skip


def build_scheduler(optimizer: Any, scheduler_cfg: Any, optimizer_cfg: Any, train_iters: int, global_batch_size: int):
    """megatron-core ``OptimizerParamScheduler`` from ``cfg.scheduler`` (peak LR = ``optimizer.lr``).

    Raises:
        ValueError: warm-up not shorter than the decay, or min_lr above lr (fields named).
    """
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    steps = scheduler_steps(scheduler_cfg, train_iters, global_batch_size)
    max_lr = float(optimizer_cfg.lr)
    min_lr = float(getattr(optimizer_cfg, "min_lr", None) or 0.0)
    if min_lr > max_lr:
        raise ValueError(f"optimizer.min_lr={min_lr} exceeds optimizer.lr={max_lr}")
    if steps["lr_warmup_steps"] >= steps["lr_decay_steps"]:
        raise ValueError(
            f"scheduler warm-up ({steps['lr_warmup_steps']} samples) must be shorter than the decay "
            f"({steps['lr_decay_steps']} samples); lower scheduler.lr_warmup_iters or raise scheduler.lr_decay_iters "
            f"/ train.train_iters"
        )
    wd = getattr(optimizer_cfg, "weight_decay", 0.0)
    start_wd = scheduler_cfg.start_weight_decay if scheduler_cfg.start_weight_decay is not None else wd
    end_wd = scheduler_cfg.end_weight_decay if scheduler_cfg.end_weight_decay is not None else wd
    return OptimizerParamScheduler(
        optimizer,
        init_lr=float(getattr(scheduler_cfg, "lr_warmup_init", 0.0)),
        max_lr=max_lr,
        min_lr=min_lr,
        lr_warmup_steps=steps["lr_warmup_steps"],
        lr_decay_steps=steps["lr_decay_steps"],
        lr_decay_style=scheduler_cfg.lr_decay_style,
        start_wd=start_wd,
        end_wd=end_wd,
        wd_incr_steps=steps["wd_incr_steps"],
        wd_incr_style=scheduler_cfg.weight_decay_incr_style,
        use_checkpoint_opt_param_scheduler=scheduler_cfg.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=scheduler_cfg.override_opt_param_scheduler,
        wsd_decay_steps=steps["wsd_decay_steps"],
        lr_wsd_decay_style=getattr(scheduler_cfg, "lr_wsd_decay_style", None),
    )


def attach_schedule_hooks(model_chunks: Sequence[torch.nn.Module], optimizer: Any) -> None:
    """Give the model config what megatron-core's schedules call back into (as Megatron-LM's training loop does).

    ``finalize_model_grads`` does the data-parallel gradient reduction and, because the config has
    ``calculate_per_token_loss=True``, divides the gradients by the global count of supervised tokens.
    ``grad_scale_func`` applies the fp16 loss scale; ``no_sync_func`` defers DP reduction to the last
    micro-batch.
    """
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.utils import get_model_config

    config = get_model_config(model_chunks[0])
    config.finalize_model_grads_func = finalize_model_grads
    config.grad_scale_func = optimizer.scale_loss
    no_sync = [m.no_sync for m in model_chunks if hasattr(m, "no_sync")]
    if no_sync:
        config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    sync = [m.start_grad_sync for m in model_chunks if hasattr(m, "start_grad_sync")]
    if sync and getattr(getattr(model_chunks[0], "ddp_config", None), "overlap_grad_reduce", False):
        config.grad_sync_func = sync[0] if len(sync) == 1 else sync
