"""Batch checks, per-stage key selection and packed-sequence parameters, shared by the text and VLM steps.

A Bridge-format text batch (one micro-batch, ``b`` rows of ``s`` tokens)::

    tokens [b,s] int64   labels [b,s] int64   loss_mask [b,s] float   position_ids [b,s] int64
    attention_mask None | [b,1,s,s] bool      token_count (optional, real lengths per row)
    packed only: cu_seqlens [b, n+1] int32 (-1 padded), cu_seqlens_argmin [b,1], max_seqlen [b,1]
                 (+ cu_seqlens_unpadded, cu_seqlens_unpadded_argmin when pad_seq_to_mult > 1)

Pipeline stages need different keys: the first stage embeds ``tokens``/``position_ids``, the last computes the
loss from ``labels``/``loss_mask``. Packing metadata goes to **every** stage: attention in a middle stage that
lacks ``cu_seqlens`` silently attends across documents (Bridge issue #2952).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import torch

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("tokens", "labels", "loss_mask", "position_ids")
FIRST_STAGE_KEYS = ("tokens", "position_ids")
LAST_STAGE_KEYS = ("labels", "loss_mask")
PACKED_DEVICE_KEYS = ("cu_seqlens", "cu_seqlens_unpadded")
HOST_KEYS = ("cu_seqlens_argmin", "cu_seqlens_unpadded_argmin", "max_seqlen")


def fixed_length_dataset(dataset: Any, model: Any) -> Any:
    """The dataset config with ``pad_to_max_length=True`` when the parallel layout needs full-length batches.

    Pipeline stages exchange activations of a fixed ``[seq_length, mbs, hidden]`` shape, and sequence / context
    parallelism split the sequence into TP / 2·CP equal parts; a batch padded only to its own longest row (e.g. a
    127-token pack) then fails inside megatron-core. Bridge's recipes set ``pad_to_max_length`` whenever packing
    is on; here it is switched on only where the layout needs it (the trailing padding is its own segment with
    ``loss_mask == 0``, so losses and gradients are unchanged). Configs without the field are returned as is.
    """
    size = lambda name: int(getattr(model, name, 1) or 1)  # noqa: E731
    needs = size("pipeline_model_parallel_size") > 1 or size("context_parallel_size") > 1 or (
        size("tensor_model_parallel_size") > 1 and bool(getattr(model, "sequence_parallel", False)))
    kwargs = dict(getattr(dataset, "dataset_kwargs", None) or {})
    if not needs or not hasattr(dataset, "pad_to_max_length") or kwargs.get("pad_to_max_length", dataset.pad_to_max_length):
        return dataset
    kwargs.pop("pad_to_max_length", None)
    logger.info("dataset: padding every batch to seq_length (pad_to_max_length=True): pipeline, sequence or context "
                "parallelism needs full-length batches")
    return dataclasses.replace(dataset, pad_to_max_length=True, dataset_kwargs=kwargs or None)


def current_device() -> torch.device:
    """The accelerator this rank computes on (CPU when there is none)."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def validate_batch(batch: Mapping[str, Any], required: tuple[str, ...] = REQUIRED_KEYS) -> None:
    """Check that a batch has the keys and matching ``[b, s]`` shapes the forward step relies on.

    Raises:
        TypeError: the batch is not a mapping.
        ValueError: naming the missing keys, or the keys whose shapes differ from ``tokens``.
    """
    if not isinstance(batch, Mapping):
        raise TypeError(
            f"the data iterator yielded a {type(batch).__name__}; forward_step expects a dict with keys {list(required)}"
        )
    missing = [k for k in required if batch.get(k) is None]
    if missing:
        raise ValueError(
            f"batch is missing required key(s) {missing}; it has {sorted(batch.keys())}. The dataset's collate "
            f"function must produce {list(required)}."
        )
    ref = batch[required[0]]
    if ref.dim() != 2:
        raise ValueError(f"batch['{required[0]}'] must be [batch, seq]; got shape {tuple(ref.shape)}")
    bad = {k: tuple(batch[k].shape) for k in required[1:] if tuple(batch[k].shape) != tuple(ref.shape)}
    if bad:
        raise ValueError(
            f"batch keys {sorted(bad)} have shapes {bad} but batch['{required[0]}'] is {tuple(ref.shape)}; "
            f"all of {list(required)} must share one [batch, seq] shape"
        )
    if batch.get("cu_seqlens") is not None:
        cu = batch["cu_seqlens"]
        if cu.dim() != 2 or cu.shape[0] != ref.shape[0]:
            raise ValueError(
                f"batch['cu_seqlens'] must be [batch, n+1] with batch={ref.shape[0]}; got shape {tuple(cu.shape)}"
            )


def _to(value: Any, device: torch.device) -> Any:
    """Copy to ``device`` without stopping the host: a CPU tensor goes through pinned memory first.

    A copy from pageable memory may make CUDA wait for the stream's earlier work (the previous micro-batch's
    backward) before it starts, which would leave the GPU idle while the next forward is being launched.
    """
    if not isinstance(value, torch.Tensor):
        return value
    if device.type == "cuda" and value.device.type == "cpu" and not value.is_pinned():
        value = value.pin_memory()
    return value.to(device, non_blocking=True)


def select_for_stage(
    batch: Mapping[str, Any], *, is_first: bool, is_last: bool, device: torch.device | None = None
) -> dict[str, Any]:
    """Move the keys this pipeline stage uses to ``device``; other keys become None.

    Host keys (``cu_seqlens_argmin``, ``max_seqlen``) stay on the CPU so reading them needs no device sync.

    >>> b = {"tokens": t, "labels": l, "loss_mask": m, "position_ids": p, "cu_seqlens": cu}   # doctest: +SKIP
    >>> sorted(k for k, v in select_for_stage(b, is_first=False, is_last=False).items() if v is not None)
    ['cu_seqlens']                                                                             # doctest: +SKIP
    """
    device = device or current_device()
    wanted = set(PACKED_DEVICE_KEYS)
    if is_first:
        wanted.update(FIRST_STAGE_KEYS)
    if is_last:
        wanted.update(LAST_STAGE_KEYS)
    if batch.get("attention_mask") is not None:
        wanted.add("attention_mask")
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key in HOST_KEYS:
            out[key] = value.cpu() if isinstance(value, torch.Tensor) else value
        elif key in wanted:
            out[key] = _to(value, device)
        else:
            out[key] = None
    for key in (*REQUIRED_KEYS, "attention_mask"):
        out.setdefault(key, None)
    return out


def _trim(cu: torch.Tensor, argmin: Any) -> torch.Tensor:
    """Drop the -1 padding of one row of cu_seqlens, using the host-side argmin when given (no sync)."""
    cu = cu.reshape(-1)
    if argmin is not None:
        n = int(argmin.reshape(-1)[0]) if isinstance(argmin, torch.Tensor) else int(argmin)
        return cu[:n] if n > 0 else cu
    valid = cu >= 0  # device sync: only reached for batches built without cu_seqlens_argmin
    return cu[valid]


def get_packed_seq_params(batch: Mapping[str, Any]):
    """megatron-core ``PackedSeqParams`` (``qkv_format="thd"``) for a packed micro-batch of one row.

    ``cu_seqlens=[[0, 3, 7, -1]]`` with ``cu_seqlens_argmin=[[3]]`` gives ``cu_seqlens_q = cu_seqlens_kv =
    [0, 3, 7]``. When ``cu_seqlens_unpadded`` is present (``pad_seq_to_mult > 1``) it becomes ``cu_seqlens_q/kv``
    and the padded boundaries go to ``cu_seqlens_q_padded/kv_padded``.

    Raises:
        ValueError: the packed batch has more than one row (packed SFT needs ``train.micro_batch_size=1``).
    """
    from megatron.core.packed_seq_params import PackedSeqParams

    cu = batch["cu_seqlens"]
    if cu.dim() == 2 and cu.shape[0] != 1:
        raise ValueError(
            f"packed batches must hold one pack per micro-batch (cu_seqlens has {cu.shape[0]} rows); "
            f"set train.micro_batch_size=1 for packed sequences"
        )
    padded = _trim(cu, batch.get("cu_seqlens_argmin")).to(torch.int32)
    max_seqlen = batch.get("max_seqlen")
    if isinstance(max_seqlen, torch.Tensor):
        max_seqlen = int(max_seqlen.reshape(-1)[0])
    kwargs: dict[str, Any] = {"qkv_format": "thd", "max_seqlen_q": max_seqlen, "max_seqlen_kv": max_seqlen}
    if batch.get("cu_seqlens_unpadded") is not None:
        unpadded = _trim(batch["cu_seqlens_unpadded"], batch.get("cu_seqlens_unpadded_argmin")).to(torch.int32)
        kwargs.update(
            cu_seqlens_q=unpadded,
            cu_seqlens_kv=unpadded,
            cu_seqlens_q_padded=padded,
            cu_seqlens_kv_padded=padded,
        )
    else:
        kwargs.update(cu_seqlens_q=padded, cu_seqlens_kv=padded)
    return PackedSeqParams(**kwargs)


def context_parallel_slice(
    batch: Mapping[str, Any], cp_size: int | None = None, cp_rank: int | None = None
) -> dict[str, Any]:
    """This context-parallel rank's share of a micro-batch (``tokens/labels/loss_mask/position_ids``).

    Every document is cut into ``2·CP`` equal chunks and rank ``r`` keeps chunks ``r`` and ``2·CP-1-r``
    (balanced causal work; :mod:`sft_bridge_port.models.context_parallel`). Packed batches: documents are the
    padded ``cu_seqlens`` segments, which therefore must be multiples of ``2·CP`` (``pad_seq_to_mult = 2·CP``);
    ``cu_seqlens`` and the other packing keys stay global, as attention expects. Unpacked batches: each row is one
    document (the split of megatron-core's ``get_batch_on_this_cp_rank``). Call it on the batch as the data iterator
    yields it (before moving it to the device); ``cp_size/cp_rank`` default to megatron's parallel state.

    Example (CP=2, rank 0, one row with ``cu_seqlens=[0, 8, 12]``): token indices ``[0, 1, 6, 7, 8, 11]``.
    """
    from megatron.core import parallel_state

    if cp_size is None:
        cp_size = parallel_state.get_context_parallel_world_size()
    if not cp_size or cp_size <= 1:
        return dict(batch)
    cp_rank = parallel_state.get_context_parallel_rank() if cp_rank is None else cp_rank
    seq = batch["tokens"].shape[1]
    if batch.get("cu_seqlens") is not None:
        from sft_bridge_port.models.context_parallel import partition_packed_batch

        cu = batch["cu_seqlens"]
        if cu.dim() == 2 and cu.shape[0] != 1:
            raise ValueError(
                f"packed batches must hold one pack per micro-batch (cu_seqlens has {cu.shape[0]} rows); "
                f"set train.micro_batch_size=1 for packed sequences"
            )
        padded = _trim(cu, batch.get("cu_seqlens_argmin")).cpu()
        return partition_packed_batch(batch, padded, cp_size, cp_rank)
    if seq % (2 * cp_size):
        raise ValueError(
            f"context_parallel_size={cp_size} needs sequences padded to a multiple of {2 * cp_size}, got {seq} "
            f"tokens; set dataset.pad_to_max_length=True with seq_length divisible by {2 * cp_size}"
        )
    from sft_bridge_port.models.context_parallel import SLICED_KEYS, local_token_index

    index = local_token_index([seq], cp_size, cp_rank)
    out = dict(batch)
    for key in (*SLICED_KEYS, "attention_mask"):
        value = batch.get(key)
        if value is not None:  # attention_mask [b, 1, s, s]: keep this rank's query rows
            out[key] = value.index_select(2 if key == "attention_mask" else 1, index.to(value.device))
    return out


def real_lengths(batch: Mapping[str, Any]) -> list[int]:
    """Real (non-padding) sub-sequence lengths of a CPU batch, for FLOP accounting; never syncs a device.

    Packed: differences of ``cu_seqlens`` (unpadded when present). Unpadded: ``token_count`` when the collate
    gives it, else the full row length.
    """
    cu = batch.get("cu_seqlens_unpadded")
    argmin = batch.get("cu_seqlens_unpadded_argmin")
    if cu is None:
        cu, argmin = batch.get("cu_seqlens"), batch.get("cu_seqlens_argmin")
    if isinstance(cu, torch.Tensor) and cu.device.type == "cpu":
        lengths: list[int] = []
        rows = cu if cu.dim() == 2 else cu.view(1, -1)
        for i, row in enumerate(rows):
            row_argmin = argmin[i] if isinstance(argmin, torch.Tensor) and argmin.dim() > 0 else argmin
            bounds = _trim(row, row_argmin).tolist()
            lengths.extend(b - a for a, b in zip(bounds[:-1], bounds[1:]) if b > a)
        return lengths
    tokens = batch["tokens"]
    count = batch.get("token_count")
    if count is not None:
        values = count.tolist() if isinstance(count, torch.Tensor) else list(count)
        if len(values) == tokens.shape[0]:
            return [min(int(v), tokens.shape[1]) for v in values]
    return [int(tokens.shape[1])] * int(tokens.shape[0])
