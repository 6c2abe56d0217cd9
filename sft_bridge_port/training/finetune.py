"""Entry points with Megatron-Bridge's signatures: ``finetune(config, forward_step_func, callbacks=None)``.

    from sft_bridge_port.training.finetune import finetune
    from sft_bridge_port.training.gpt_step import forward_step
    finetune(config=cfg, forward_step_func=forward_step)

``forward_step_func`` may take ``(data_iterator, model)``, ``(data_iterator, model, return_schedule_plan)``,
``(state, data_iterator, model)`` or ``(state, data_iterator, model, return_schedule_plan)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from sft_bridge_port.training.checkpointing import save_checkpoint
from sft_bridge_port.training.setup import setup
from sft_bridge_port.training.state import GlobalState
from sft_bridge_port.training.step_signature import adapt_forward_step
from sft_bridge_port.training.train import train


def _callback_list(callbacks: Any) -> Sequence[Any]:
    if callbacks is None:
        return ()
    return list(getattr(callbacks, "callbacks", callbacks))


def pretrain(config: Any, forward_step_func: Callable, callbacks: Any = None) -> GlobalState:
    """Resolve the config, build the run, train to ``train.train_iters``; returns the final state."""
    from sft_bridge_port.config import runtime_config_update

    runtime_config_update(config)
    run = setup(config)
    state = run.state
    save_dir = config.checkpoint.save

    def checkpoint() -> None:
        save_checkpoint(state, run.model, run.optimizer, run.scheduler, save_dir)

    try:
        train(
            state, run.model, run.optimizer, run.scheduler, adapt_forward_step(forward_step_func, state),
            run.train_iterator, run.valid_iterator_fn, run.spec,
            checkpoint_fn=checkpoint if save_dir else None, callbacks=_callback_list(callbacks),
        )  # fmt: skip
    finally:
        state.metrics.close()
    return state


def finetune(config: Any, forward_step_func: Callable, callbacks: Any = None) -> GlobalState:
    """Like :func:`pretrain`, but starting weights are required (Bridge's rule).

    Raises:
        ValueError: neither ``checkpoint.pretrained_checkpoint`` nor ``checkpoint.load`` is set.
    """
    ckpt = config.checkpoint
    if ckpt.pretrained_checkpoint is None and ckpt.load is None:
        raise ValueError(
            "finetune() needs starting weights: set config.checkpoint.pretrained_checkpoint (a Megatron checkpoint "
            "or a Hugging Face model folder) or config.checkpoint.load (a run to resume)"
        )
    return pretrain(config, forward_step_func, callbacks)
