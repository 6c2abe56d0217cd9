"""Training-loop sub-configs with Megatron-Bridge's field names and defaults.

Bridge v0.4+ takes these from ``megatron.training.config``, which megatron-core ships only from 0.17, so we
define them here with the same fields. They are plain keyword-only dataclasses: recipes and users mutate them
freely after construction, and every cross-field rule runs once in
:func:`sft_bridge_port.config.runtime.runtime_config_update`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass(kw_only=True)
class TrainingConfig:
    """Batch sizes, run length and loop housekeeping (``cfg.train``).

    Exactly one of ``train_iters`` / ``train_samples`` must be set; ``train_samples`` is turned into
    ``train_iters = train_samples // global_batch_size`` by ``runtime_config_update``.
    ``eval_iters``/``eval_interval``/``skip_train`` are Bridge's pre-v0.4 spellings: when set they are moved
    into ``cfg.validation`` (with a warning) so v0.2/v0.3 scripts keep working.
    """

    micro_batch_size: Optional[int] = None
    global_batch_size: Optional[int] = None
    rampup_batch_size: Optional[list[int]] = None
    decrease_batch_size_if_needed: bool = False
    empty_unused_memory_level: Literal[0, 1, 2] = 0
    check_weight_hash_across_dp_replicas_interval: Optional[int] = None
    train_sync_interval: Optional[int] = None
    train_iters: Optional[int] = None
    train_samples: Optional[int] = None
    exit_interval: Optional[int] = None
    exit_duration_in_mins: Optional[int] = None
    exit_signal_handler: bool = False
    manual_gc: bool = False
    manual_gc_interval: int = 0
    manual_gc_eval: bool = True
    iterations_to_skip: list[int] = field(default_factory=list)
    check_optimizer_step_success: bool = True
    skip_sync_grad_norm_across_mp: bool = False
    # Deprecated (Bridge <= v0.3): moved to ValidationConfig by runtime_config_update.
    eval_iters: Optional[int] = None
    eval_interval: Optional[int] = None
    skip_train: Optional[bool] = None


@dataclass(kw_only=True)
class ValidationConfig:
    """When and how long to evaluate (``cfg.validation``, Bridge v0.4+)."""

    eval_iters: int = 100
    eval_interval: Optional[int] = None
    start_eval_at_iter: Optional[int] = None
    eval_global_batch_size: Optional[int] = None
    eval_micro_batch_size: Optional[int] = None
    skip_train: bool = False
    test_mode: bool = False
    full_validation: bool = False
    multiple_validation_sets: bool = False
    validation_set_names: Optional[list[str]] = None


@dataclass(kw_only=True)
class SchedulerConfig:
    """Learning-rate and weight-decay schedule (``cfg.scheduler``).

    Peak and final LR are ``optimizer.lr`` / ``optimizer.min_lr`` (Bridge has no ``max_lr`` field here).
    The ``*_steps`` fields are derived in samples (iterations x global batch size) by
    ``runtime_config_update``, in the units megatron-core's ``OptimizerParamScheduler`` expects.
    """

    lr_decay_style: Literal["constant", "linear", "cosine", "inverse-square-root", "WSD"] = "linear"
    lr_wsd_decay_style: Literal["exponential", "linear", "cosine", "minus_sqrt"] = "exponential"
    lr_decay_iters: Optional[int] = None
    lr_decay_samples: Optional[int] = None
    lr_wsd_decay_iters: Optional[int] = None
    lr_wsd_decay_samples: Optional[int] = None
    lr_warmup_fraction: Optional[float] = None
    lr_warmup_iters: int = 0
    lr_warmup_samples: int = 0
    lr_warmup_init: float = 0.0
    override_opt_param_scheduler: bool = False
    use_checkpoint_opt_param_scheduler: bool = False
    start_weight_decay: Optional[float] = None
    end_weight_decay: Optional[float] = None
    weight_decay_incr_style: Literal["constant", "linear", "cosine"] = "constant"
    no_weight_decay_cond_type: Optional[str] = None
    # Derived by runtime_config_update (in samples); not user inputs.
    lr_warmup_steps: Optional[int] = field(default=None, init=False)
    lr_decay_steps: Optional[int] = field(default=None, init=False)
    wd_incr_steps: Optional[int] = field(default=None, init=False)
    wsd_decay_steps: Optional[int] = field(default=None, init=False)
