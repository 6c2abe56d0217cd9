"""The LoRA adapter module and how it is attached to a megatron-core parallel linear layer.

An adapter computes ``delta(x) = scale * B(A(dropout(x)))`` with ``scale = alpha / dim``, shaped like the base
layer's *local* output, so that ``y = base(x) + delta(x)``. Tensor parallelism follows the base layer::

    ColumnParallelLinear  W_r: [out/tp, in]   A: [dim, in] (replicated)    B_r: [out/tp, dim] (split like W)
        h = x @ A.T (identical on every rank); y_r = h @ B_r.T.  Backward sums dL/dh over ranks (the
        copy_to_tensor_model_parallel_region on h), so A gets the full gradient on every rank.
    RowParallelLinear     W_r: [out, in/tp]   A_r: [dim, in/tp] (split)    B: [out, dim] (replicated)
        h = sum_r x_r @ A_r.T (an all-reduce of the small [.., dim] tensor, a reduce-scatter over the
        sequence under sequence parallelism); y = h @ B.T, added after the base layer's own reduction.

For ``linear_qkv`` the local output is the per-query-group interleaved QKV of this rank's groups and for
``linear_fc1`` it is ``[gate_r; up_r]``, so B's rows are split exactly like W's and merging is ``W_r += s B_r A``.

Attaching keeps the base module (and its parameter names) in place: the adapter becomes its child
``adapter`` (``...linear_qkv.adapter.linear_in.weight`` / ``linear_out.weight``, Bridge's names), a forward
hook adds ``delta``, and the module's ``sharded_state_dict`` is extended so dist_checkpointing stores the
adapter with the right TP split (``linear_fc1``'s B with megatron's SwiGLU factory, like the base weight).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
from typing import Any, Iterator

import torch
import torch.nn.functional as F

ADAPTER_ATTR = "adapter"


@dataclasses.dataclass(frozen=True)
class ParallelLayout:
    """How a base linear layer is split over tensor-parallel ranks (read by :func:`layout_of`)."""

    mode: str  # "column" | "row"
    tp_size: int
    tp_rank: int
    tp_group: Any
    sequence_parallel: bool
    gather_output: bool
    in_local: int
    out_local: int

    @property
    def in_full(self) -> int:
        return self.in_local * (self.tp_size if self.mode == "row" else 1)

    @property
    def out_full(self) -> int:
        return self.out_local * (self.tp_size if self.mode == "column" else 1)


def layout_of(base: torch.nn.Module) -> ParallelLayout:
    """Read the TP layout of a megatron-core (or Transformer Engine) column/row parallel linear layer.

    Raises:
        TypeError: the module is not a column/row parallel linear, or fuses a norm into its input.
    """
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    if isinstance(base, ColumnParallelLinear):
        mode = "column"
    elif isinstance(base, RowParallelLinear):
        mode = "row"
    else:
        mode = getattr(base, "parallel_mode", None)
    if mode not in ("column", "row") or getattr(base, "weight", None) is None:
        raise TypeError(f"LoRA needs a Column/RowParallelLinear layer, got {type(base).__name__}")
    if hasattr(base, "layer_norm_weight"):
        raise TypeError(
            f"{type(base).__name__} fuses a norm into its input, so an adapter would see un-normalised "
            "activations; build the model with unfused norms (sft_bridge_port's default layer spec)"
        )
    group = getattr(base, "tp_group", None) or parallel_state.get_tensor_model_parallel_group()
    size = torch.distributed.get_world_size(group) if torch.distributed.is_initialized() else 1
    rank = torch.distributed.get_rank(group) if torch.distributed.is_initialized() else 0
    out_local, in_local = base.weight.shape
    return ParallelLayout(
        mode=mode, tp_size=size, tp_rank=rank, tp_group=group,
        sequence_parallel=bool(getattr(base, "sequence_parallel", False)) and size > 1,
        gather_output=bool(getattr(base, "gather_output", False)), in_local=in_local, out_local=out_local,
    )  # fmt: skip


_INITS = {
    "xavier": torch.nn.init.xavier_normal_,
    "kaiming": lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5)),
    "normal": lambda t: torch.nn.init.normal_(t, std=0.02),
    "zero": torch.nn.init.zeros_,
}


def check_init_method(field_name: str, method: str) -> None:
    """ValueError naming the field unless ``method`` is one of :data:`_INITS`."""
    if method not in _INITS:
        raise ValueError(f"peft.{field_name}={method!r} is not supported; choose one of {sorted(_INITS)}")


def init_tp_consistent(full_shape: tuple[int, int], method: str, layout: ParallelLayout, split_axis: int | None,
                       device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Initialise the *full* matrix (fp32, rank 0's draw shared over the TP group), return this rank's slice.

    Initialising the full shape keeps the distribution independent of the TP size, and the broadcast makes
    replicated matrices identical on every rank whatever each rank's RNG state is.
    """
    full = torch.empty(full_shape, dtype=torch.float32, device=device)
    _INITS[method](full)
    if layout.tp_size > 1:
        src = torch.distributed.get_global_rank(layout.tp_group, 0)
        torch.distributed.broadcast(full, src=src, group=layout.tp_group)
        if split_axis is not None:
            full = torch.chunk(full, layout.tp_size, dim=split_axis)[layout.tp_rank]
    return full.to(dtype).contiguous()


def mark_tp(param: torch.nn.Parameter, split_axis: int | None, layout: ParallelLayout) -> None:
    """Set megatron's TP attributes (grad-norm de-duplication, SP gradient all-reduce) on an adapter param."""
    from megatron.core.tensor_parallel import (
        set_defaults_if_not_set_tensor_model_parallel_attributes,
        set_tensor_model_parallel_attributes,
    )

    if split_axis is not None and layout.tp_size > 1:
        set_tensor_model_parallel_attributes(param, True, split_axis, 1)
    else:
        set_defaults_if_not_set_tensor_model_parallel_attributes(param)
        # Under SP a replicated param after the row layer's reduce-scatter sees only this rank's tokens:
        # finalize_model_grads sums such grads over TP when the flag is set (as for norms).
        param.sequence_parallel = layout.mode == "row" and layout.sequence_parallel


class LoRAAdapter(torch.nn.Module):
    """``scale * B(A(dropout(x)))`` for one column/row parallel linear layer (see the module docstring).

    Args:
        layout: the base layer's TP layout.
        dim, alpha: rank and scaling numerator (scale = alpha / dim).
        dropout, dropout_position: dropout probability, applied to the input ("pre") or the output ("post").
        a_init, b_init: init method names for A and B ("xavier", "kaiming", "normal", "zero").
        dtype, device: of the adapter weights.
        out_rows: overrides the local output rows (CanonicalLoRA's q/k/v and gate/up parts).
        swiglu_out: B's rows are ``[gate_r; up_r]`` (fused ``linear_fc1`` with a gated unit): checkpointed with
            megatron's SwiGLU factory so a checkpoint reshards across TP sizes like the base weight.
    """

    def __init__(self, layout: ParallelLayout, dim: int, alpha: float, *, dropout: float = 0.0,
                 dropout_position: str = "pre", a_init: str = "xavier", b_init: str = "zero",
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 out_rows: int | None = None, swiglu_out: bool = False) -> None:
        super().__init__()
        self.layout, self.dim, self.scale = layout, dim, alpha / dim
        self.dropout_position, self.swiglu_out, self.enabled = dropout_position, swiglu_out, True
        self.dropout = torch.nn.Dropout(dropout)
        out_local = out_rows if out_rows is not None else layout.out_local
        col = layout.mode == "column"
        a_full = (dim, layout.in_full)
        b_full = (out_local * (layout.tp_size if col else 1), dim)
        self.linear_in = torch.nn.Linear(layout.in_local, dim, bias=False, device="meta")
        self.linear_out = torch.nn.Linear(dim, out_local, bias=False, device="meta")
        a = init_tp_consistent(a_full, a_init, layout, None if col else 1, device, dtype)
        b = init_tp_consistent(b_full, b_init, layout, 0 if col else None, device, dtype)
        self.linear_in.weight = torch.nn.Parameter(a)
        self.linear_out.weight = torch.nn.Parameter(b)
        mark_tp(self.linear_in.weight, None if col else 1, layout)
        mark_tp(self.linear_out.weight, 0 if col else None, layout)

    def extra_repr(self) -> str:
        return f"mode={self.layout.mode}, dim={self.dim}, scale={self.scale:g}, tp={self.layout.tp_size}"

    def _dropout(self, t: torch.Tensor, position: str) -> torch.Tensor:
        if position != self.dropout_position or not self.training or self.dropout.p == 0:
            return t
        if self.layout.mode == "row" and self.layout.tp_size > 1 and position == "pre":
            from megatron.core.tensor_parallel import get_cuda_rng_tracker

            with get_cuda_rng_tracker().fork():  # x_r differs per rank: independent masks
                return self.dropout(t)
        return self.dropout(t)  # replicated tensor: default RNG, identical on every TP rank

    def _low_rank(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(x) @ A.T`` in ``A``'s dtype and the output's TP layout: what ``linear_out`` multiplies."""
        from megatron.core import tensor_parallel as tp

        lay, group = self.layout, self.layout.tp_group
        x = x.to(self.linear_in.weight.dtype)
        if lay.mode == "column":
            if lay.sequence_parallel:  # x: [s/tp, b, in] -> [s, b, in]; backward keeps this rank's slice
                x = tp.gather_from_sequence_parallel_region(x, tensor_parallel_output_grad=False, group=group)
            h = F.linear(self._dropout(x, "pre"), self.linear_in.weight)  # [s, b, dim]
            return tp.copy_to_tensor_model_parallel_region(h, group=group) if lay.tp_size > 1 else h
        h = F.linear(self._dropout(x, "pre"), self.linear_in.weight)  # partial sum over this rank's input slice
        if lay.sequence_parallel:
            return tp.reduce_scatter_to_sequence_parallel_region(h, group=group)
        return tp.reduce_from_tensor_model_parallel_region(h, group=group) if lay.tp_size > 1 else h

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's contribution in the base layer's local output layout, in ``x``'s dtype."""
        from megatron.core import tensor_parallel as tp

        y = F.linear(self._low_rank(x), self.linear_out.weight)  # [s, b, out/tp]
        if self.layout.mode == "column" and self.layout.gather_output:
            y = tp.gather_from_tensor_model_parallel_region(y, group=self.layout.tp_group)
        return (self._dropout(y, "post") * self.scale).to(x.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``scale * B @ A`` in fp32, shaped like the base layer's local weight ``[out_local, in_local]``."""
        return self.scale * (self.linear_out.weight.float() @ self.linear_in.weight.float())

    def merged_weight(self, base: torch.nn.Module) -> torch.Tensor:
        """The fp32 weight that makes the plain layer compute what base + adapter compute (eval mode)."""
        return base.weight.float() + self.delta_weight()

    def forward(self, base: torch.nn.Module, x: torch.Tensor, output: Any) -> Any:
        """Add ``delta(x)`` to the base layer's output ``(y, bias)`` (or a bare tensor)."""
        if not self.enabled:
            return output
        y = output[0] if isinstance(output, tuple) else output
        y = self._add_fused(x, y) if self._fusable(y) else y + self.delta(x)
        return (y, *output[1:]) if isinstance(output, tuple) else y

    def _fusable(self, y: torch.Tensor) -> bool:
        """``y + delta`` as one GEMM (:meth:`_add_fused`): no post-dropout, no output gather, one dtype."""
        post_dropout = self.dropout_position == "post" and self.training and self.dropout.p > 0
        gather = self.layout.mode == "column" and self.layout.gather_output
        return not post_dropout and not gather and y.dtype == self.linear_out.weight.dtype

    def _add_fused(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y + scale * (h @ B.T)`` through ``addmm``: the scale goes on the rank-``dim`` ``h`` and the sum into the
        GEMM's epilogue, instead of two extra passes over the full-width output (fc1 of an 8B model: 28k columns)."""
        h = self._low_rank(x) * self.scale
        b = self.linear_out.weight
        out = torch.addmm(y.reshape(-1, y.shape[-1]), h.reshape(-1, h.shape[-1]), b.t())
        return out.view(y.shape)

    def split_axes(self) -> dict[str, int]:
        """TP split axis of each parameter, by state-dict name (replicated ones are absent)."""
        if self.layout.mode == "column":
            return {"linear_out.weight": 0}
        return {"linear_in.weight": 1}

    def swiglu_keys(self) -> tuple[str, ...]:
        """Parameters whose rows are ``[gate_r; up_r]`` (saved through megatron's SwiGLU factory)."""
        return ("linear_out.weight",) if self.swiglu_out else ()

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None) -> dict:
        """ShardedTensors for dist_checkpointing: split params by their TP axis, replicated ones once."""
        return adapter_sharded_tensors(self, prefix, sharded_offsets, metadata)


def adapter_sharded_tensors(adapter: torch.nn.Module, prefix: str, sharded_offsets: tuple, metadata: dict | None) -> dict:
    """Sharded state dict of an adapter exposing ``layout``, ``split_axes()`` and ``swiglu_keys()``."""
    from megatron.core.transformer.mlp import apply_swiglu_sharded_factory
    from megatron.core.transformer.utils import make_sharded_tensors_for_checkpoint

    lay = adapter.layout
    kwargs = {}
    dp_cp = (metadata or {}).get("dp_cp_group")
    if dp_cp is not None and lay.tp_group is not None:
        kwargs = {"tp_group": lay.tp_group, "dp_cp_group": dp_cp}
    state = {k: v for k, v in adapter.state_dict(prefix="", keep_vars=True).items() if isinstance(v, torch.Tensor)}
    axes = adapter.split_axes() if lay.tp_size > 1 else {}
    out = make_sharded_tensors_for_checkpoint(state, prefix, axes, sharded_offsets, **kwargs)
    swiglu_kwargs = {}
    if "singleton_local_shards" in inspect.signature(apply_swiglu_sharded_factory).parameters:
        swiglu_kwargs["singleton_local_shards"] = bool((metadata or {}).get("singleton_local_shards", False))
    for key in adapter.swiglu_keys():
        out[prefix + key] = apply_swiglu_sharded_factory(out[prefix + key], sharded_offsets, **swiglu_kwargs)
    return out


def _run_adapter(module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    x = args[0] if args else kwargs["input_"]
    return getattr(module, ADAPTER_ATTR)(module, x, output)


def _sharded_state_dict_with_adapter(self: torch.nn.Module, prefix: str = "", sharded_offsets: tuple = (),
                                     metadata: dict | None = None) -> dict:
    # The class method shards the base weight; it also sees the adapter's params (as replicated): replace them.
    sd = type(self).sharded_state_dict(self, prefix, sharded_offsets, metadata)
    adapter_prefix = f"{prefix}{ADAPTER_ATTR}."
    sd = {k: v for k, v in sd.items() if not k.startswith(adapter_prefix)}
    sd.update(getattr(self, ADAPTER_ATTR).sharded_state_dict(adapter_prefix, sharded_offsets, metadata))
    return sd


def attach(base: torch.nn.Module, adapter: torch.nn.Module) -> None:
    """Make ``adapter`` the child ``adapter`` of ``base`` and add its output to every forward of ``base``."""
    if is_adapted(base):
        raise ValueError(f"{type(base).__name__} already carries an adapter; apply a PEFT object only once")
    base.add_module(ADAPTER_ATTR, adapter)
    base.register_forward_hook(_run_adapter, with_kwargs=True)
    base.sharded_state_dict = types.MethodType(_sharded_state_dict_with_adapter, base)


def detach(base: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`attach`; returns the removed adapter."""
    adapter = getattr(base, ADAPTER_ATTR)
    for key, hook in list(base._forward_hooks.items()):
        if hook is _run_adapter:
            del base._forward_hooks[key]
            base._forward_hooks_with_kwargs.pop(key, None)
    delattr(base, ADAPTER_ATTR)
    base.__dict__.pop("sharded_state_dict", None)
    return adapter


def is_adapted(module: torch.nn.Module) -> bool:
    """True when ``module`` carries an attached adapter."""
    return isinstance(getattr(module, "_modules", {}).get(ADAPTER_ATTR), torch.nn.Module) and any(
        hook is _run_adapter for hook in module._forward_hooks.values()
    )


def adapted_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(name, base_module)`` for every module of ``model`` that carries an adapter."""
    for name, module in model.named_modules():
        if is_adapted(module):
            yield name, module
