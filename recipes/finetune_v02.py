"""Bridge v0.2's ``<model>_finetune_config(**kwargs)`` on top of the v0.5 recipes.

v0.2 recipes took keyword arguments instead of being edited afterwards, and defaulted to LoRA and to
*unpacked* data (GBS 128, seq 2048; packed: GBS 8, seq 4096). Example::

    cfg = llama3_8b_finetune_config(peft=None, train_iters=100, finetune_lr=1e-5, dir="/runs", name="exp1")
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from sft_bridge_port.config import ConfigContainer
from sft_bridge_port.data.config import default_squad_config

from recipes.common import PEFT_LR, SFT_LR, run_dirs

FINETUNE_KWARGS = (
    "dir", "name", "pretrained_checkpoint", "peft", "packed_sequence", "train_iters", "global_batch_size",
    "micro_batch_size", "seq_length", "eval_interval", "save_interval", "finetune_lr", "min_lr", "lr_warmup_iters",
    "lr_decay_iters", "wandb_project", "wandb_entity", "wandb_exp_name", "precision_config", "hf_path",
)


def make_finetune_config(sft: Callable[..., ConfigContainer], peft: Callable[..., ConfigContainer],
                         name: str) -> Callable[..., ConfigContainer]:
    """A v0.2-style function that picks the SFT or PEFT recipe and applies the keyword arguments."""

    def finetune_config(**kwargs: Any) -> ConfigContainer:
        unknown = sorted(set(kwargs) - set(FINETUNE_KWARGS))
        if unknown:
            raise TypeError(f"{name}() got unexpected keyword arguments {unknown}; accepted: {', '.join(FINETUNE_KWARGS)}")
        scheme = kwargs.get("peft", "lora")
        is_peft = scheme is not None and not (isinstance(scheme, str) and scheme.lower() == "none")
        extra = {"hf_path": kwargs["hf_path"]} if kwargs.get("hf_path") else {}
        cfg = peft(scheme, **extra) if is_peft else sft(**extra)
        return apply_finetune_kwargs(cfg, is_peft=is_peft, **{k: v for k, v in kwargs.items() if k not in ("peft", "hf_path")})

    finetune_config.__name__ = finetune_config.__qualname__ = name
    finetune_config.__doc__ = f"Bridge v0.2 name: {sft.__name__} / {peft.__name__} with keyword arguments ({', '.join(FINETUNE_KWARGS)})."
    return finetune_config


def apply_finetune_kwargs(
    cfg: ConfigContainer, *, is_peft: bool, dir: Optional[str] = None, name: str = "default",
    pretrained_checkpoint: Optional[str] = None, packed_sequence: bool = False, train_iters: int = 1000,
    global_batch_size: Optional[int] = None, micro_batch_size: int = 1, seq_length: Optional[int] = None,
    eval_interval: int = 30, save_interval: int = 50, finetune_lr: Optional[float] = None, min_lr: float = 0.0,
    lr_warmup_iters: int = 50, lr_decay_iters: Optional[int] = None, wandb_project: Optional[str] = None,
    wandb_entity: Optional[str] = None, wandb_exp_name: Optional[str] = None, precision_config: Any = "bf16_mixed",
) -> ConfigContainer:
    """Set the v0.2 keyword arguments on a v0.5 recipe's config (defaults are v0.2's)."""
    seq_length = seq_length or (cfg.model.seq_length if packed_sequence else 2048)
    pad = cfg.dataset.packed_sequence_specs.pad_seq_to_mult if cfg.dataset.packed_sequence_specs else 1
    cfg.dataset = default_squad_config(seq_length, packed_sequence=packed_sequence, pad_seq_to_mult=pad)
    cfg.model.seq_length = seq_length
    cfg.train.train_iters, cfg.train.micro_batch_size = train_iters, micro_batch_size
    cfg.train.global_batch_size = global_batch_size or (cfg.train.global_batch_size if packed_sequence else 128)
    cfg.validation.eval_interval, cfg.checkpoint.save_interval = eval_interval, save_interval
    cfg.optimizer.lr = finetune_lr if finetune_lr is not None else (PEFT_LR if is_peft else SFT_LR)
    cfg.optimizer.min_lr = min_lr
    cfg.scheduler.lr_warmup_iters, cfg.scheduler.lr_decay_iters = lr_warmup_iters, lr_decay_iters
    ckpt_dir, tb_dir = run_dirs(dir, name)
    cfg.checkpoint.save = cfg.checkpoint.load = ckpt_dir
    cfg.checkpoint.pretrained_checkpoint = pretrained_checkpoint
    cfg.logger.tensorboard_dir = tb_dir
    cfg.logger.wandb_project, cfg.logger.wandb_entity, cfg.logger.wandb_exp_name = wandb_project, wandb_entity, wandb_exp_name
    cfg.mixed_precision = precision_config
    return cfg
