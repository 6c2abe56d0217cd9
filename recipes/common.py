"""Shared recipe templates (Megatron-Bridge v0.5.1 defaults) and the helpers every family file uses.

A family recipe is ``build_recipe(hf_path, <what differs>)``: the template below holds every value shared by
Bridge's SFT/PEFT recipes, so a recipe states only its model id, parallelism, sequence length and batch/LoRA
changes. Nothing here touches the network: the model architecture comes from ``get_provider`` (a local HF
folder, else the built-in table of public ids).
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from sft_bridge_port.config import (
    CheckpointConfig,
    ConfigContainer,
    DistributedDataParallelConfig,
    LoggerConfig,
    OptimizerConfig,
    RNGConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainingConfig,
    ValidationConfig,
)
from sft_bridge_port.data.config import default_squad_config
from sft_bridge_port.models import get_provider

SFT_LR, PEFT_LR = 5e-6, 1e-4


def distributed_fused_adam_with_cosine_annealing(
    precision: str = "bf16-mixed", lr_warmup_iters: int = 2000, lr_decay_iters: Optional[int] = None,
    adam_beta1: float = 0.9, adam_beta2: float = 0.95, adam_eps: float = 1e-5, weight_decay: float = 0.1,
    max_lr: float = 1e-4, min_lr: Optional[float] = None, clip_grad: float = 1.0,
) -> tuple[OptimizerConfig, SchedulerConfig]:
    """Adam with the distributed optimizer and a cosine schedule (Bridge's helper, same defaults).

    ``min_lr=None`` means ``0.1 * max_lr``. Weight decay is scheduled constant at 0.033 (as in Bridge), so
    ``weight_decay`` only matters when ``scheduler.start_weight_decay`` is reset to None.
    """
    optimizer = OptimizerConfig(
        optimizer="adam", lr=max_lr, min_lr=0.1 * max_lr if min_lr is None else min_lr, weight_decay=weight_decay,
        bf16=precision == "bf16-mixed", fp16=precision == "16-mixed", adam_beta1=adam_beta1, adam_beta2=adam_beta2,
        adam_eps=adam_eps, use_distributed_optimizer=True, clip_grad=clip_grad,
    )
    scheduler = SchedulerConfig(
        start_weight_decay=0.033, end_weight_decay=0.033, weight_decay_incr_style="constant",
        lr_decay_style="cosine", lr_warmup_iters=lr_warmup_iters, lr_warmup_init=0.0, lr_decay_iters=lr_decay_iters,
        override_opt_param_scheduler=True,
    )
    return optimizer, scheduler


def run_dirs(base_dir: Optional[str] = None, name: str = "default") -> tuple[str, str]:
    """``(checkpoint_dir, tensorboard_dir)`` under ``<base_dir or $CWD/nemo_experiments>/<name>`` (Bridge's layout)."""
    run_dir = os.path.join(base_dir or os.path.join(os.getcwd(), "nemo_experiments"), name)
    return os.path.join(run_dir, "checkpoints"), os.path.join(run_dir, "tb_logs")


def _sft_common() -> ConfigContainer:
    """Bridge's full-SFT template: 1000 iters, GBS 128, MBS 1, LR 5e-6 cosine to 0, packed SQuAD at 2048."""
    ckpt_dir, tb_dir = run_dirs()
    optimizer, scheduler = distributed_fused_adam_with_cosine_annealing(
        lr_warmup_iters=50, max_lr=SFT_LR, min_lr=0.0, adam_beta2=0.98)
    return ConfigContainer(
        model=None,
        train=TrainingConfig(train_iters=1000, global_batch_size=128, micro_batch_size=1),
        validation=ValidationConfig(eval_interval=100, eval_iters=32),
        optimizer=optimizer,
        scheduler=scheduler,
        ddp=DistributedDataParallelConfig(check_for_nan_in_grad=True, grad_reduce_in_fp32=True),
        dataset=default_squad_config(seq_length=2048, packed_sequence=True, pad_seq_to_mult=1),
        logger=LoggerConfig(log_interval=1, tensorboard_dir=tb_dir, log_timers_to_tensorboard=True),
        tokenizer=TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=None),
        checkpoint=CheckpointConfig(save_interval=100, save=ckpt_dir, load=ckpt_dir, pretrained_checkpoint=None,
                                    ckpt_format="torch_dist", fully_parallel_save=True),
        rng=RNGConfig(seed=5678),
        peft=None,
        comm_overlap=None,
        mixed_precision="bf16_mixed",
    )


def _peft_common() -> ConfigContainer:
    """Bridge's PEFT template: the SFT template with LR 1e-4 and LoRA (dim 32, alpha 32) on all linear layers."""
    cfg = _sft_common()
    cfg.optimizer.lr = PEFT_LR
    cfg.peft = default_peft("lora")
    return cfg


def default_peft(peft_scheme: Any, **fields: Any) -> Any:
    """``"lora"`` / ``"dora"`` -> that PEFT object with ``fields`` set; ``"none"``/None -> None; a PEFT object
    passes through unchanged (the recipe's dim/alpha apply only to a scheme given by name).

    The PEFT classes live in ``sft_bridge_port.peft`` and are imported only when a PEFT recipe is built.
    """
    from sft_bridge_port.peft import default_peft_config

    peft = default_peft_config(peft_scheme)
    if not isinstance(peft_scheme, str):
        return peft
    for name, value in fields.items():
        if peft is not None and value is not None:
            setattr(peft, name, value)
    return peft


def build_recipe(
    hf_path: str, *, peft_scheme: Any = None, seq_length: int = 2048, tp: int = 1, pp: int = 1,
    vpp: Optional[int] = None, cp: int = 1, sp: bool = False, global_batch_size: int = 8,
    manual_gc: bool = False, cross_entropy_loss_fusion: bool = True, peft_fields: Optional[dict[str, Any]] = None,
    distributed_optimizer: Optional[bool] = None,
) -> ConfigContainer:
    """The template plus one recipe's deltas (what every Bridge v0.5.1 SFT/PEFT recipe sets).

    Args:
        hf_path: local HF folder or public id; the model comes from ``get_provider`` (offline for both).
        peft_scheme: None for full SFT, else ``"lora"``/``"dora"``/a PEFT object (LR 1e-4, ``peft_fields`` set on it).
        seq_length: model, dataset and pack size. tp/pp/vpp/cp/sp: parallelism.
        manual_gc: Bridge's Llama recipes run ``gc`` every 100 steps; Qwen recipes do not.
        distributed_optimizer: None keeps the template's (on); False switches it off on optimizer and DDP.
    """
    cfg = _sft_common() if peft_scheme is None else _peft_common()
    if peft_scheme is not None:
        cfg.peft = default_peft(peft_scheme, **(peft_fields or {}))
    cfg.model = get_provider(hf_path, seq_length=seq_length, tensor_model_parallel_size=tp,
                             pipeline_model_parallel_size=pp, virtual_pipeline_model_parallel_size=vpp,
                             context_parallel_size=cp, sequence_parallel=sp, pipeline_model_parallel_layout=None,
                             pipeline_dtype=None, cross_entropy_loss_fusion=cross_entropy_loss_fusion,
                             cross_entropy_fusion_impl="native", recompute_granularity=None, recompute_modules=None)
    cfg.tokenizer.tokenizer_model = str(hf_path)
    cfg.dataset = default_squad_config(seq_length, packed_sequence=True, pad_seq_to_mult=2 * cp if cp > 1 else 1)
    cfg.train.global_batch_size = global_batch_size
    cfg.train.manual_gc, cfg.train.manual_gc_interval = manual_gc, 100 if manual_gc else 0
    cfg.validation.eval_interval = 30
    cfg.checkpoint.save_interval = 50
    cfg.ddp.grad_reduce_in_fp32 = False  # as Bridge's recipes write it; bf16_mixed sets it back to True at runtime
    cfg.ddp.use_distributed_optimizer = False
    if distributed_optimizer is False:
        cfg.optimizer.use_distributed_optimizer = False
    return cfg


def bridge_aliases(recipes: dict[str, Callable[..., ConfigContainer]], gpus: Optional[dict[str, int]] = None
                   ) -> dict[str, Callable[..., ConfigContainer]]:
    """Bridge's names for our recipes: ``X_sft_config`` / ``X_peft_config`` (v0.4-v0.5), ``X_finetune_config``
    (v0.2, keyword arguments) and, where ``gpus`` gives the GPU count, ``X_sft_<n>gpu_h100_bf16_config`` (v0.6).
    """
    from recipes.finetune_v02 import make_finetune_config

    aliases: dict[str, Callable[..., ConfigContainer]] = {}
    for name, fn in recipes.items():
        aliases[f"{name}_config"] = fn
        if gpus and name in gpus:
            aliases[f"{name}_{gpus[name]}gpu_h100_bf16_config"] = fn
        stem, _, kind = name.rpartition("_")
        if kind == "sft" and f"{stem}_peft" in recipes:
            aliases[f"{stem}_finetune_config"] = make_finetune_config(fn, recipes[f"{stem}_peft"], f"{stem}_finetune_config")
    return aliases
