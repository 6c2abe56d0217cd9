"""Validation loss and perplexity over ``validation.eval_iters`` global batches.

The loss is the token-weighted mean over every supervised token of every evaluated batch on every
data-parallel rank (sum of per-token losses / number of supervised tokens), the same quantity training logs.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator, Sequence

import torch


def reduce_loss_sums(losses_reduced: list[dict[str, torch.Tensor]], key: str = "lm loss") -> torch.Tensor:
    """Sum the ``[loss_sum, num_tokens]`` pairs of all micro-batches, then all-reduce over data parallel.

    Returns a 2-element fp32 device tensor (zeros on pipeline stages without the loss). No host sync.
    """
    from megatron.core import parallel_state

    from sft_bridge_port.training.batch import current_device

    if losses_reduced and key in losses_reduced[0]:
        total = torch.stack([d[key].float() for d in losses_reduced]).sum(dim=0)
    else:
        total = torch.zeros(2, dtype=torch.float32, device=current_device())
    if torch.distributed.is_initialized() and parallel_state.get_data_parallel_world_size(with_context_parallel=True) > 1:
        torch.distributed.all_reduce(total, group=parallel_state.get_data_parallel_group(with_context_parallel=True))
    return total


def evaluate(
    step_fn: Callable,
    model: Sequence[torch.nn.Module],
    data_iterator: Iterator[dict[str, Any]],
    *,
    num_microbatches: int,
    eval_iters: int,
    seq_length: int,
    micro_batch_size: int,
) -> tuple[float, float, int]:
    """Run ``eval_iters`` forward-only global batches; returns ``(loss, perplexity, batches evaluated)``.

    A finite iterator that runs out stops the evaluation early (every rank sees the same data length).
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from sft_bridge_port.training.losses import deferred_loss_checks

    forward_backward = get_forward_backward_func()
    total = None
    done = 0
    for m in model:
        m.eval()
    try:
        with torch.no_grad():
            for _ in range(eval_iters):
                batches = list(itertools.islice(data_iterator, num_microbatches))
                if len(batches) < num_microbatches:
                    break
                it = iter(batches) if len(model) == 1 else [iter(batches) for _ in model]
                with deferred_loss_checks() as loss_checks:
                    losses = forward_backward(
                        forward_step_func=step_fn, data_iterator=it, model=list(model),
                        num_microbatches=num_microbatches, seq_length=seq_length,
                        micro_batch_size=micro_batch_size, decoder_seq_length=seq_length, forward_only=True,
                    )  # fmt: skip
                loss_checks.raise_if_bad()
                sums = reduce_loss_sums(losses)
                total = sums if total is None else total + sums
                done += 1
    finally:
        for m in model:
            m.train()
    if total is None:
        return float("nan"), float("nan"), 0
    loss_sum, count = total.double().cpu().tolist()
    loss = loss_sum / count if count > 0 else float("nan")
    return loss, math.exp(min(loss, 20.0)) if math.isfinite(loss) else float("nan"), done
