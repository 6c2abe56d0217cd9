"""Masked next-token loss with Megatron-Bridge's contract (``megatron.bridge.training.losses``).

The model, called with ``labels``, returns the per-token cross entropy ``[b, s]``. This module turns it into the
three values megatron-core's schedules expect from a loss function:

    (loss_sum, num_tokens, {"lm loss": tensor([loss_sum, num_tokens])})

``loss_sum`` is a **sum** over supervised tokens, not a mean. With ``calculate_per_token_loss=True`` (set by our
setup) the schedules keep these sums and ``finalize_model_grads`` divides the gradients once by the number of
supervised tokens of the whole global batch (all micro-batches, all data-parallel ranks), so a global batch gives
the same gradient however it is split. The logger divides the summed numerators by the summed denominators.

Worked example::

    losses    = [[2.0, 1.0, 4.0]]          # per-token CE from the model
    loss_mask = [[0,   1,   1  ]]          # only the answer tokens count
    -> loss_sum = 5.0, num_tokens = 2, {"lm loss": tensor([5.0, 2.0])}   # logged mean = 2.5
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import math
from typing import Callable, Iterator

import torch

logger = logging.getLogger(__name__)

SPIKY_LOSS_FACTOR: float = 10.0
"""A micro-batch whose mean loss exceeds this factor times the running average is reported (Bridge: 10)."""


class LossSpikeMonitor:
    """Running average of recent per-token losses; flags values above ``factor`` times that average.

    Spikes are reported (logged and kept in ``spikes``), never fatal, like Bridge's "Spiky loss" check.
    """

    def __init__(self, factor: float = SPIKY_LOSS_FACTOR, window: int = 100) -> None:
        self.factor = factor
        self.history: collections.deque[float] = collections.deque(maxlen=window)
        self.spikes: list[tuple[float, float]] = []  # (value, running average at the time)

    def observe(self, value: float) -> bool:
        """Record ``value``; return True (and log a warning) when it is a spike."""
        if math.isnan(value) or math.isinf(value):
            return False
        is_spike = False
        if self.history:
            average = sum(self.history) / len(self.history)
            if average > 0 and value > self.factor * average:
                is_spike = True
                self.spikes.append((value, average))
                logger.warning(
                    "Spiky loss: per-token loss %.4g is more than %.3g x the running average %.4g",
                    value,
                    self.factor,
                    average,
                )
        self.history.append(value)
        return is_spike

    def reset(self) -> None:
        self.history.clear()
        self.spikes.clear()


spike_monitor = LossSpikeMonitor()
"""Process-wide monitor used when ``check_for_spiky_loss=True`` (one per process, like Bridge's rerun machine)."""


class DeferredLossCheck:
    """The NaN/Inf test of every micro-batch loss of one step, kept on the device and read once.

    Bridge tests each micro-batch's loss on the host (its rerun state machine), which stops the host until that
    micro-batch's forward has run on the GPU: the GPU then idles while the backward's first kernels are launched,
    once per micro-batch. :func:`deferred_loss_checks` collects the tests instead, and the training step reads them
    in one sync before the optimizer step, so a bad loss still stops training before any weight changes.
    """

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []  # each micro-batch's summed loss, kept as it is (no kernel here)

    def add(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach().reshape(1))

    def raise_if_bad(self) -> None:
        """Raise the check's RuntimeError (naming the first bad micro-batch) if any loss was NaN or Inf."""
        if not self.losses:
            return
        values = torch.cat(self.losses).cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if bad.numel():
            index = int(bad[0, 0])
            _raise_non_finite("NaN" if bool(values[index].isnan()) else "Inf", f" (micro-batch {index} of this step)")


_DEFERRED: list[DeferredLossCheck] = []


@contextlib.contextmanager
def deferred_loss_checks() -> Iterator[DeferredLossCheck]:
    """Inside the block, ``check_for_nan_in_loss`` records instead of syncing; call ``raise_if_bad()`` after it."""
    check = DeferredLossCheck()
    _DEFERRED.append(check)
    try:
        yield check
    finally:
        _DEFERRED.remove(check)


def _raise_non_finite(kind: str, where: str = "") -> None:
    raise RuntimeError(
        f"found {kind} in local forward loss calculation{where}. The model diverged or the batch is malformed; lower "
        "optimizer.lr, check the data, or set rerun_state_machine.check_for_nan_in_loss=False to skip this check."
    )


def _check_finite(loss: torch.Tensor) -> None:
    if _DEFERRED:  # the training step reads it once, before the optimizer step
        _DEFERRED[-1].add(loss)
        return
    # One host sync per micro-batch, as in Bridge (its rerun state machine does the same test).
    if not bool(torch.isfinite(loss).all()):
        _raise_non_finite("NaN" if bool(torch.isnan(loss).any()) else "Inf")


def masked_next_token_loss(
    loss_mask: torch.Tensor,
    output_tensor: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    check_for_nan_in_loss: bool = True,
    check_for_spiky_loss: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Sum of the per-token losses where ``loss_mask`` is 1, and the number of such tokens.

    Args:
        loss_mask: ``[b, s]`` (any float/int/bool dtype); 1 where the token is supervised.
        output_tensor: per-token losses ``[b, s]``, or a tuple ``(losses, loss_mask)`` (VLM / context-parallel
            models that slice the mask themselves); the tuple's mask replaces ``loss_mask``.
        check_for_nan_in_loss: raise RuntimeError when the summed loss is NaN or Inf.
        check_for_spiky_loss: report (warning, not an error) a micro-batch whose mean loss exceeds
            ``SPIKY_LOSS_FACTOR`` times the running average.

    Returns:
        ``(loss_sum, num_tokens, {"lm loss": tensor([loss_sum, num_tokens])})`` with ``loss_sum`` fp32 (0-dim,
        differentiable) and ``num_tokens`` an int32 0-dim tensor. An all-masked batch gives ``(0.0, 0, ...)``.

    Raises:
        ValueError: when the mask and the losses hold different numbers of elements.
        RuntimeError: NaN/Inf loss with ``check_for_nan_in_loss``.
    """
    if isinstance(output_tensor, (tuple, list)):
        losses, loss_mask = output_tensor[0], output_tensor[1]
    else:
        losses = output_tensor
    losses = losses.reshape(-1).float()
    mask = loss_mask.reshape(-1).float()
    if losses.numel() != mask.numel():
        raise ValueError(
            f"loss_mask has {mask.numel()} elements but the model returned {losses.numel()} per-token losses "
            f"(shapes {tuple(loss_mask.shape)} vs {tuple(output_tensor[0].shape if isinstance(output_tensor, (tuple, list)) else output_tensor.shape)})"
        )
    # torch.where, not losses * mask: a masked-out position holding NaN/Inf must not poison the sum.
    loss = torch.where(mask > 0, losses * mask, torch.zeros_like(losses)).sum()
    num_tokens = mask.sum().clone().detach().to(torch.int)
    if check_for_nan_in_loss:
        _check_finite(loss)
    if check_for_spiky_loss:
        count = int(num_tokens.item())
        if count > 0:
            spike_monitor.observe(loss.detach().item() / count)
    reporting_loss = torch.cat([loss.clone().detach().view(1), num_tokens.view(1).to(loss.dtype)])
    return loss, num_tokens, {"lm loss": reporting_loss}


def create_masked_next_token_loss_function(
    loss_mask: torch.Tensor,
    check_for_nan_in_loss: bool = True,
    check_for_spiky_loss: bool = False,
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """``functools.partial`` of :func:`masked_next_token_loss` bound to a batch's mask (what forward steps return)."""
    return functools.partial(
        masked_next_token_loss,
        loss_mask,
        check_for_nan_in_loss=check_for_nan_in_loss,
        check_for_spiky_loss=check_for_spiky_loss,
    )
