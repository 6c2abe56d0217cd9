"""Stage registry: a stage name picks the training entry point and its default forward step.

``run(cfg)`` is "pick a recipe, call run()": it chooses ``peft`` when ``cfg.peft`` is set, else ``sft``,
and calls ``finetune(cfg, forward_step)``. The registry sits above ``training/`` and passes the step in, so
``finetune()`` never imports this module. Add a stage with :func:`register_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from sft_bridge_port.config.serialization import resolve


@dataclass(frozen=True)
class Stage:
    """One way to train: the entry ``entry(cfg, forward_step, callbacks=None)`` and its default step.

    Both are import paths, resolved only when the stage runs, so listing stages imports no training code.
    """

    name: str
    entry: str
    forward_step: str
    description: str


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add (or replace) a stage under ``stage.name``."""
    STAGES[stage.name] = stage
    return stage


register_stage(Stage("sft", "sft_bridge_port.training.finetune.finetune", "sft_bridge_port.training.gpt_step.forward_step",
                     "full-parameter supervised finetuning from a pretrained checkpoint"))
register_stage(Stage("peft", "sft_bridge_port.training.finetune.finetune", "sft_bridge_port.training.gpt_step.forward_step",
                     "parameter-efficient finetuning (LoRA/DoRA adapters; base weights frozen)"))
register_stage(Stage("pretrain", "sft_bridge_port.training.finetune.pretrain", "sft_bridge_port.training.gpt_step.forward_step",
                     "training without a pretrained checkpoint"))


def get_stage(name: str) -> Stage:
    """The registered stage called ``name``.

    Raises:
        ValueError: unknown name; the message lists the stages.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(sorted(STAGES))}")
    return STAGES[name]


def select_stage(cfg: Any, stage: Optional[str] = None) -> Stage:
    """``stage`` when given, else ``peft`` if ``cfg.peft`` is set, else ``sft``; checks they agree."""
    chosen = get_stage(stage or ("peft" if getattr(cfg, "peft", None) is not None else "sft"))
    if chosen.name == "peft" and cfg.peft is None:
        raise ValueError("stage 'peft' needs cfg.peft (e.g. the override peft=lora, or a *_peft recipe)")
    if chosen.name == "sft" and cfg.peft is not None:
        raise ValueError("stage 'sft' trains all weights but cfg.peft is set: pass peft=null, or use stage 'peft'")
    return chosen


def run(cfg: Any, stage: Optional[str] = None, forward_step: Optional[Callable] = None, callbacks: Any = None) -> Any:
    """Train ``cfg`` with the chosen stage's entry point and forward step (or ``forward_step`` if given)."""
    chosen = select_stage(cfg, stage)
    entry = resolve(chosen.entry)
    step = forward_step if forward_step is not None else resolve(chosen.forward_step)
    if callbacks is None:
        return entry(cfg, step)
    return entry(cfg, step, callbacks=callbacks)
