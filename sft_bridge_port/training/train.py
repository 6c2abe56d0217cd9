"""The training loop: micro-batched forward/backward through megatron-core schedules, step, log, eval, save.

Loss normalisation: the model config has ``calculate_per_token_loss=True`` (set at setup), so the schedules
keep each micro-batch's loss **sum** and ``finalize_model_grads`` divides the accumulated gradient once by the
supervised-token count of the whole global batch, summed over micro-batches and data-parallel ranks. The
gradient of a global batch is therefore the gradient of its token-weighted mean loss, whatever the split.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
from typing import Any, Callable, Iterator, Sequence

import torch

from sft_bridge_port.training.eval import evaluate, reduce_loss_sums
from sft_bridge_port.training.flops import step_flops


@dataclasses.dataclass
class LoopSpec:
    """Batch geometry of one iteration (derived once from the config)."""

    num_microbatches: int
    micro_batch_size: int
    global_batch_size: int
    seq_length: int


def num_microbatches(global_batch_size: int, micro_batch_size: int, data_parallel_size: int) -> int:
    """``GBS / (MBS * DP)``. Raises ValueError naming the three values when it does not divide."""
    per_step = micro_batch_size * data_parallel_size
    if global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size={global_batch_size} is not divisible by train.micro_batch_size="
            f"{micro_batch_size} x data-parallel size {data_parallel_size}; choose a multiple of {per_step}"
        )
    return global_batch_size // per_step


def chunk_iterators(data_iterator: Iterator, num_chunks: int) -> Iterator | list[Iterator]:
    """With virtual pipeline stages every model chunk reads the same micro-batches: one tee'd copy per chunk."""
    return data_iterator if num_chunks == 1 else list(itertools.tee(data_iterator, num_chunks))


def train_step(
    step_fn: Callable, data_iterator: Any, model: Sequence[torch.nn.Module], optimizer: Any, scheduler: Any,
    spec: LoopSpec,
) -> tuple[torch.Tensor, float | None, bool]:
    """One optimizer step over ``spec.num_microbatches`` micro-batches.

    Returns ``(tensor([loss_sum, num_tokens]) summed over micro-batches and DP ranks, grad norm, skipped)``.
    The loss tensor stays on the device. The host waits for the GPU once, after the backward: the NaN/Inf loss
    checks of all micro-batches (:func:`~sft_bridge_port.training.losses.deferred_loss_checks`), then megatron's
    grad norm.
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from sft_bridge_port.training.losses import deferred_loss_checks

    for chunk in model:
        if hasattr(chunk, "zero_grad_buffer"):
            chunk.zero_grad_buffer()
    optimizer.zero_grad()
    with deferred_loss_checks() as loss_checks:
        losses = get_forward_backward_func()(
            forward_step_func=step_fn, data_iterator=data_iterator, model=list(model),
            num_microbatches=spec.num_microbatches, seq_length=spec.seq_length,
            micro_batch_size=spec.micro_batch_size, decoder_seq_length=spec.seq_length, forward_only=False,
        )  # fmt: skip
    loss_checks.raise_if_bad()  # before the optimizer step: a NaN loss changes no weight
    update_successful, grad_norm, _ = optimizer.step()
    if update_successful:
        scheduler.step(increment=spec.global_batch_size)
    return reduce_loss_sums(losses), grad_norm, not update_successful


def _reduce_flops(state: Any, model_config: Any, vocab_size: int) -> tuple[int, float]:
    """Real tokens and FLOPs seen since the last call, summed over data-parallel ranks (a log-interval collective)."""
    from megatron.core import parallel_state

    from sft_bridge_port.training.batch import current_device

    stats = torch.tensor([state.flops.num_tokens, state.flops.seqlen_sq_sum], dtype=torch.float64, device=current_device())
    state.flops.reset()
    if torch.distributed.is_initialized() and parallel_state.get_data_parallel_world_size() > 1:
        torch.distributed.all_reduce(stats, group=parallel_state.get_data_parallel_group())
    num_tokens, sq_sum = stats.cpu().tolist()
    return int(num_tokens), step_flops(model_config, vocab_size, int(num_tokens), int(sq_sum))


def train(
    state: Any, model: Sequence[torch.nn.Module], optimizer: Any, scheduler: Any, step_fn: Callable,
    train_iterator: Iterator, valid_iterator_fn: Callable[[], Iterator] | None, spec: LoopSpec,
    checkpoint_fn: Callable[[], Any] | None = None, callbacks: Sequence[Any] = (),
) -> None:
    """Run from ``state.train_state.step`` to ``cfg.train.train_iters``.

    Args:
        step_fn: the adapted ``(data_iterator, model)`` forward step.
        valid_iterator_fn: returns a fresh validation iterator (or None: no validation).
        checkpoint_fn: saves a checkpoint of the current state (None: no saving).
        callbacks: objects with any of ``on_train_start(state)``, ``on_train_step_end(state, record)``,
            ``on_eval_end(state, record)``, ``on_train_end(state)``.
    """
    from megatron.core.utils import get_model_config

    from sft_bridge_port.utils.dist_ckpt import unwrap

    cfg, ts, log = state.cfg, state.train_state, state.metrics
    model_config = get_model_config(model[0])
    vocab_size = getattr(unwrap(model[0]), "vocab_size", 0) or 0
    train_iters, save_interval = cfg.train.train_iters, getattr(cfg.checkpoint, "save_interval", None)
    eval_interval = getattr(cfg.validation, "eval_interval", None) if valid_iterator_fn else None
    log_interval = max(1, int(getattr(cfg.logger, "log_interval", 1) or 1))
    data = chunk_iterators(train_iterator, len(model))
    if cfg.train.manual_gc:
        gc.disable()
        gc.collect()
    _call(callbacks, "on_train_start", state)
    log.start(ts.step)
    start_step, last_saved, last_eval = ts.step, None, None
    while ts.step < train_iters:
        loss, grad_norm, skipped = train_step(step_fn, data, model, optimizer, scheduler, spec)
        ts.step += 1
        ts.consumed_train_samples += spec.global_batch_size
        ts.skipped_train_samples += spec.global_batch_size if skipped else 0
        if ts.step % log_interval == 0 or ts.step == train_iters:
            num_tokens, flops = _reduce_flops(state, model_config, vocab_size)
            ts.floating_point_operations_so_far += flops
            if log.throughput is not None:
                log.throughput.add(num_tokens, flops)
        record = log.record_step(ts.step, loss, grad_norm, optimizer.param_groups[0]["lr"], skipped, log.throughput)
        _call(callbacks, "on_train_step_end", state, record)
        if cfg.train.manual_gc and cfg.train.manual_gc_interval and ts.step % cfg.train.manual_gc_interval == 0:
            gc.collect()
        if eval_interval and ts.step % eval_interval == 0:
            _run_eval(state, model, step_fn, valid_iterator_fn, spec, callbacks)
            last_eval = ts.step
        if checkpoint_fn and save_interval and ts.step % save_interval == 0:
            checkpoint_fn()
            last_saved = ts.step
        exit_interval = getattr(cfg.train, "exit_interval", None)
        if exit_interval and ts.step % exit_interval == 0:
            break
    if eval_interval and last_eval != ts.step and ts.step > start_step:
        _run_eval(state, model, step_fn, valid_iterator_fn, spec, callbacks)
    if checkpoint_fn and last_saved != ts.step and ts.step > start_step:
        checkpoint_fn()
    if cfg.train.manual_gc:
        gc.enable()
    _call(callbacks, "on_train_end", state)


def _run_eval(state, model, step_fn, valid_iterator_fn, spec: LoopSpec, callbacks) -> None:
    cfg = state.cfg
    if cfg.train.manual_gc and getattr(cfg.train, "manual_gc_eval", True):
        gc.collect()
    saved_flops = dataclasses.replace(state.flops)  # eval batches are not training throughput
    loss, _, done = evaluate(
        step_fn, model, valid_iterator_fn(), num_microbatches=spec.num_microbatches,
        eval_iters=cfg.validation.eval_iters, seq_length=spec.seq_length, micro_batch_size=spec.micro_batch_size,
    )  # fmt: skip
    state.train_state.consumed_valid_samples += done * spec.global_batch_size
    state.flops = saved_flops
    record = state.metrics.record_eval(state.train_state.step, loss)
    _call(callbacks, "on_eval_end", state, record)


def _call(callbacks: Sequence[Any], hook: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            fn(*args)
