"""Forward step for vision-language SFT (``megatron.bridge.training.vlm_step`` drop-in).

Like :mod:`gpt_step`, plus the batch's ``visual_inputs`` (pixel values, image sizes, ...): a dict, or an object
with ``normalized_for_model()`` returning one (Bridge's ``GenericVisualInputs``). Every stage gets ``tokens`` and
``position_ids`` (a VLM splices image embeddings into the text sequence); the model may return
``(per_token_loss, loss_mask)`` when it changes the sequence (image tokens), and that mask then replaces the
batch's in the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import torch

from sft_bridge_port.training.batch import current_device, real_lengths, select_for_stage, validate_batch
from sft_bridge_port.training.gpt_step import _loss_checks, model_inputs, stage_roles
from sft_bridge_port.training.losses import create_masked_next_token_loss_function


def _visual_kwargs(visual: Any, device: torch.device) -> dict[str, Any]:
    if visual is None:
        return {}
    if hasattr(visual, "normalized_for_model"):
        visual = visual.normalized_for_model()
    elif dataclasses.is_dataclass(visual):
        visual = {f.name: getattr(visual, f.name) for f in dataclasses.fields(visual)}
    if not isinstance(visual, dict):
        raise TypeError(f"batch['visual_inputs'] must be a dict or provide normalized_for_model(); got {type(visual).__name__}")
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in visual.items() if v is not None}


def forward_step(
    state: Any, data_iterator: Iterator[dict[str, Any]], model: torch.nn.Module, return_schedule_plan: bool = False
) -> tuple[Any, Callable]:
    """One VLM micro-batch forward; returns ``(output, loss_func)`` (see :func:`gpt_step.forward_step`)."""
    if return_schedule_plan:
        raise ValueError("return_schedule_plan is not supported for VLM models")
    batch = next(data_iterator)
    validate_batch(batch)
    if state is not None and getattr(state, "flops", None) is not None:
        state.flops.add(real_lengths(batch))
    device = current_device()
    _, is_last = stage_roles(model)
    selected = select_for_stage(batch, is_first=True, is_last=is_last, device=device)
    forward_args = {**model_inputs(selected), **_visual_kwargs(batch.get("visual_inputs"), device)}
    check_nan, check_spiky = _loss_checks(state)
    loss_func = create_masked_next_token_loss_function(selected["loss_mask"], check_nan, check_spiky)
    return model(**forward_args), loss_func
