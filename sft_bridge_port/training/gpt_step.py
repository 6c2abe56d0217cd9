"""Forward step for text SFT/pretraining (``megatron.bridge.training.gpt_step`` drop-in).

``forward_step(state, data_iterator, model)`` pulls one micro-batch, checks it, sends each pipeline stage the
keys it needs (packing metadata to every stage), calls the model with ``labels`` so it returns the per-token
loss ``[b, s]``, and hands megatron-core's schedule a loss function bound to the batch's ``loss_mask``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from sft_bridge_port.training.batch import (
    context_parallel_slice,
    current_device,
    get_packed_seq_params,
    real_lengths,
    select_for_stage,
    validate_batch,
)
from sft_bridge_port.training.losses import create_masked_next_token_loss_function, masked_next_token_loss

__all__ = ["forward_step", "get_batch", "get_batch_from_iterator", "get_packed_seq_params", "masked_next_token_loss"]


def stage_roles(model: torch.nn.Module) -> tuple[bool, bool]:
    """(embeds input, computes loss) for this model chunk: megatron's ``pre_process`` / ``post_process`` flags.

    Reading them from the chunk (not from the global pipeline rank) is right for virtual pipeline stages too.
    """
    from megatron.core.utils import get_attr_wrapped_model

    try:
        return bool(get_attr_wrapped_model(model, "pre_process")), bool(get_attr_wrapped_model(model, "post_process"))
    except RuntimeError:  # a model without pipeline flags (plain nn.Module) is a whole pipeline
        return True, True


def get_batch_from_iterator(
    data_iterator: Iterator[dict[str, Any]], is_first: bool = True, is_last: bool = True, state: Any = None
) -> dict[str, Any]:
    """Next micro-batch, validated and moved to this rank's device (only the keys this stage uses)."""
    try:
        batch = next(data_iterator)
    except StopIteration as exc:
        raise RuntimeError(
            "the training data iterator is exhausted; it must yield at least train_iters * global_batch_size "
            "samples (the SFT data iterators are infinite)"
        ) from exc
    validate_batch(batch)
    if state is not None and getattr(state, "flops", None) is not None:
        state.flops.add(real_lengths(batch))
    batch = context_parallel_slice(batch)  # on the host, before the copy: each CP rank moves only its share
    return select_for_stage(batch, is_first=is_first, is_last=is_last, device=current_device())


def get_batch(data_iterator: Iterator[dict[str, Any]], cfg: Any = None, use_mtp: bool = False, *, model=None):
    """Bridge's tuple form: ``(tokens, labels, loss_mask, attention_mask, position_ids, cu_seqlens,
    cu_seqlens_argmin, max_seqlen)``; keys a stage does not use are None."""
    is_first, is_last = stage_roles(model) if model is not None else (True, True)
    b = get_batch_from_iterator(data_iterator, is_first or use_mtp, is_last)
    return (
        b["tokens"], b["labels"], b["loss_mask"], b["attention_mask"], b["position_ids"],
        b.get("cu_seqlens"), b.get("cu_seqlens_argmin"), b.get("max_seqlen"),
    )  # fmt: skip


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``GPTModel.forward`` for a fetched batch (packed batches add ``packed_seq_params``)."""
    inputs: dict[str, Any] = {
        "input_ids": batch["tokens"],
        "position_ids": batch["position_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": batch["labels"],
    }
    if batch.get("cu_seqlens") is not None:
        inputs["packed_seq_params"] = get_packed_seq_params(batch)
    return inputs


def _loss_checks(state: Any) -> tuple[bool, bool]:
    rsm = getattr(getattr(state, "cfg", None), "rerun_state_machine", None)
    if rsm is None:
        return True, False
    return bool(getattr(rsm, "check_for_nan_in_loss", True)), bool(getattr(rsm, "check_for_spiky_loss", False))


def forward_step(
    state: Any, data_iterator: Iterator[dict[str, Any]], model: torch.nn.Module, return_schedule_plan: bool = False
) -> tuple[Any, Callable]:
    """One micro-batch forward; returns ``(per-token loss or hidden states, loss_func)``.

    Args:
        state: the run's :class:`~sft_bridge_port.training.state.GlobalState` (reads
            ``cfg.rerun_state_machine.check_for_nan_in_loss/check_for_spiky_loss``; may be None).
        data_iterator: yields Bridge-format batch dicts (see :mod:`sft_bridge_port.training.batch`).
        model: one (possibly DDP-wrapped) GPTModel chunk.
        return_schedule_plan: return ``model.build_schedule_plan(...)`` instead of running the forward (MoE
            communication overlap; as in Bridge).

    Raises:
        ValueError: missing keys or mismatched shapes in the batch (the message names them).
    """
    is_first, is_last = stage_roles(model)
    batch = get_batch_from_iterator(data_iterator, is_first, is_last, state)
    check_nan, check_spiky = _loss_checks(state)
    loss_func = create_masked_next_token_loss_function(batch["loss_mask"], check_nan, check_spiky)
    forward_args = model_inputs(batch)
    if return_schedule_plan:
        plan = model.build_schedule_plan(
            batch["tokens"], batch["position_ids"], batch["attention_mask"],
            labels=batch["labels"], loss_mask=batch["loss_mask"],
        )  # fmt: skip
        return plan, loss_func
    return model(**forward_args), loss_func
