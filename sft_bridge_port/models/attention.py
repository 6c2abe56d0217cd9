"""Core attention through PyTorch's fused kernels: no Transformer Engine, no apex, no S×S score tensor.

megatron-core's local ``DotProductAttention`` materialises the ``[b, h, s, s]`` scores (its fused softmax needs
apex) and refuses packed THD batches. ``SDPAttention`` is a drop-in ``core_attention`` module for megatron-core's
``SelfAttention`` that calls:

- padded / unpacked batches (mcore "sbhd" layout, ``query [s, b, h, d]``):
  ``F.scaled_dot_product_attention(is_causal=True, enable_gqa=True)`` (flash / memory-efficient kernels);
- packed batches (``PackedSeqParams(qkv_format="thd")``, ``query [t, h, d]``, documents delimited by
  ``cu_seqlens``): on CUDA with bf16/fp16, flash-attention 4's kernels when installed on a Hopper/Blackwell GPU
  (:mod:`sft_bridge_port.models.flash_cute`, ``config.attention_kernel``), else PyTorch's varlen flash-attention
  kernels, called directly (:mod:`sft_bridge_port.models.flash_varlen`) or through
  ``torch.nn.attention.varlen.varlen_attn`` with causal ``window_size=(-1, 0)``; elsewhere (CPU, fp32) one causal
  SDPA call per document. Either way a token only attends to earlier tokens of its own document.

Example (packing two documents of lengths 3 and 2; ``cu_seqlens = [0, 3, 5]``)::

    token    a0 a1 a2 b0 b1
    b1 sees           b0 b1      (never a0..a2)

Sliding-window attention (Mistral v0.1) follows ``config.window_size = (left, 0)``: token ``i`` sees keys
``i - left .. i``.

Context parallelism (``context_parallel_size = P > 1``): each rank holds chunks ``r`` and ``2P-1-r`` of every
document (see :mod:`sft_bridge_port.models.context_parallel`); K and V are all-gathered over the CP group and each
local query chunk attends to its document's key prefix, so the result equals P = 1. Unpacked rows are handled as
one document each.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig

from sft_bridge_port.models.context_parallel import (
    LAYOUT_ATTR,
    CPLayout,
    build_layout,
    chunked_attention,
    cp_group_of,
    expand_keys,
    gather_first_dim,
)
from sft_bridge_port.models.flash_cute import cute_supported, cute_varlen, declined
from sft_bridge_port.models.flash_varlen import direct_flash_supported, flash_varlen
from sft_bridge_port.models.rope import (
    RotaryTable,
    apply_rotary,
    apply_rotary_pair,
    apply_rotary_pair_fused,
    packed_positions,
)

_CACHE_ATTR = "_sbp_thd_cache"
_ROPE_ATTR = "_sbp_rope_cache"
_MAXLEN_ATTR = "_sbp_thd_max_len"


@functools.lru_cache(maxsize=1)
def _varlen_kwargs() -> frozenset[str] | None:
    """Keyword names ``varlen_attn`` accepts in this torch build, or None when torch lacks it."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return frozenset(inspect.signature(varlen_attn).parameters)


def _window_left(config: TransformerConfig, seq_len: int) -> int | None:
    """Left window size when sliding-window attention actually restricts a sequence of ``seq_len`` tokens."""
    window = getattr(config, "window_size", None)
    if window is None:
        return None
    left, right = window
    if right not in (0, -1):
        raise ValueError(f"config.window_size={window}: only causal windows (left, 0) are supported")
    if left is None or left < 0 or left + 1 >= seq_len:
        return None
    return int(left)


def _band_mask(seq_len: int, left: int, device: torch.device) -> torch.Tensor:
    """Boolean [s, s] mask, True = may attend: causal and at most ``left`` tokens back."""
    idx = torch.arange(seq_len, device=device)
    dist = idx[:, None] - idx[None, :]  # [s, s] query index minus key index
    return (dist >= 0) & (dist <= left)


def _thd_cu(psp: PackedSeqParams, device: torch.device) -> torch.Tensor:
    """Document boundaries (int32, on ``device``) of a packed batch: the padded ones when given.

    Padding tokens (``pad_seq_to_mult``) sit at the end of their document, after every real token, so causal
    attention over padded boundaries is exact for real tokens.
    """
    cu = psp.cu_seqlens_q_padded if psp.cu_seqlens_q_padded is not None else psp.cu_seqlens_q
    if cu is None:
        raise ValueError("PackedSeqParams(qkv_format='thd') needs cu_seqlens_q (cumulative document lengths)")
    return cu.reshape(-1).to(device=device, dtype=torch.int32, non_blocking=True)


def _thd_max_len(psp: PackedSeqParams, cu: torch.Tensor) -> int:
    """Longest document: ``max_seqlen_q`` when it describes ``cu`` (no padded boundaries), else one host sync
    per ``PackedSeqParams`` object (cached, so the L layers of one forward pay it once)."""
    if psp.cu_seqlens_q_padded is None and psp.max_seqlen_q is not None:
        return int(psp.max_seqlen_q)
    cached = getattr(psp, _MAXLEN_ATTR, None)
    if cached is None:
        cached = int((cu[1:] - cu[:-1]).max()) if cu.numel() > 1 else 0
        setattr(psp, _MAXLEN_ATTR, cached)
    return cached


def _bucket(max_len: int, total: int, multiple: int = 256) -> int:
    """``max_len`` rounded up to a multiple of ``multiple`` (at most ``total``): an upper bound is all the varlen
    kernel needs, and few distinct values keep kernel plans / launch shapes reused across batches.

    >>> _bucket(300, 4096), _bucket(4000, 4096), _bucket(10, 64)
    (512, 4096, 64)
    """
    return max(max_len, min(total, -(-max_len // multiple) * multiple))


def _thd_boundaries(psp: PackedSeqParams, device: torch.device) -> tuple[torch.Tensor, list[int], int]:
    """(cu_seqlens int32 on ``device``, per-document lengths, longest length), cached on ``psp``.

    Only the reference per-document path needs the lengths on the host (one sync per forward).
    """
    cached = getattr(psp, _CACHE_ATTR, None)
    if cached is not None and cached[0].device == device:
        return cached
    cu = _thd_cu(psp, device)
    lengths = (cu[1:] - cu[:-1]).tolist()
    if any(n < 0 for n in lengths):
        raise ValueError(
            f"PackedSeqParams.cu_seqlens_q must be non-decreasing, got {cu.tolist()}; trim the -1 padding "
            "(cu_seqlens[: cu_seqlens_argmin]) before building PackedSeqParams"
        )
    result = (cu, lengths, max(lengths, default=0))
    setattr(psp, _CACHE_ATTR, result)
    return result


def _packed_cos_sin(
    psp: PackedSeqParams, table: RotaryTable, query: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[t, 1, rot]`` of every packed token's in-document position, computed once per batch."""
    cached = getattr(psp, _ROPE_ATTR, None)
    key = (id(table), query.device, query.dtype, query.shape[0])
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    positions = packed_positions(_thd_cu(psp, query.device), query.shape[0])
    cos, sin = table.cos_sin(positions, query.dtype)
    cos, sin = cos[:, None], sin[:, None]
    setattr(psp, _ROPE_ATTR, (key, cos, sin))
    return cos, sin


def _thd_cp_layout(psp: PackedSeqParams, cp_size: int, rank: int, device: torch.device) -> CPLayout:
    """The CP layout of a packed batch from its global padded boundaries; one host sync per batch (cached)."""
    cached = getattr(psp, LAYOUT_ATTR, None)
    if cached is not None and cached[0] == (cp_size, rank, device):
        return cached[1]
    bounds = _thd_cu(psp, device).tolist()
    layout = build_layout([b - a for a, b in zip(bounds[:-1], bounds[1:])], cp_size, rank, device)
    setattr(psp, LAYOUT_ATTR, ((cp_size, rank, device), layout))
    return layout


@functools.lru_cache(maxsize=8)
def _row_cp_layout(rows: int, seq_len: int, cp_size: int, rank: int, device: torch.device) -> CPLayout:
    """The CP layout of ``rows`` unpacked rows of ``seq_len`` global tokens (megatron's bshd CP split)."""
    return build_layout([seq_len] * rows, cp_size, rank, device)


def _cp_cos_sin(layout: CPLayout, table: RotaryTable, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[t, 1, rot]`` at the global positions of this rank's tokens, shared by every layer."""
    key = ("rope", id(table), dtype)
    if key not in layout.cache:
        cos, sin = table.cos_sin(layout.positions, dtype)
        layout.cache[key] = (cos[:, None], sin[:, None])
    return layout.cache[key]


class SDPAttention(MegatronModule):
    """Causal self-attention core for megatron-core's ``SelfAttention`` built on PyTorch kernels.

    Constructed by megatron-core with the same arguments as its ``DotProductAttention``; query, key and value
    arrive after RoPE (THD RoPE restarts at position 0 in each document, megatron-core does that from
    ``cu_seqlens``). Head counts come from the tensors, so tensor parallelism (heads split across ranks) and
    GQA need no extra bookkeeping.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str = "self",
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection: Any = None,
        **unused: Any,
    ) -> None:
        super().__init__(config=config)
        if attn_mask_type not in (AttnMaskType.causal, AttnMaskType.padding_causal):
            raise ValueError(f"SDPAttention implements causal attention only, got attn_mask_type={attn_mask_type}")
        self.layer_number = layer_number
        head_dim = config.kv_channels
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        # Set by GPTModelProvider.provide(): RoPE is then applied here (megatron-core's own RoPE is off).
        self.rotary: RotaryTable | None = None
        self.cp_size = int(config.context_parallel_size or 1)
        self._pg_collection = pg_collection  # its .cp group (megatron's global CP group when absent)

    def _dropout(self) -> float:
        return self.dropout_p if self.training else 0.0

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: PackedSeqParams | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        """Attention output: ``[s, b, h*d]`` for sbhd inputs, ``[t, h*d]`` for THD inputs."""
        if attention_bias is not None:
            raise ValueError("SDPAttention does not support attention_bias (ALiBi-style biases)")
        thd = packed_seq_params is not None and packed_seq_params.qkv_format == "thd"
        if self.cp_size > 1:
            return self._forward_cp(query, key, value, attention_mask, packed_seq_params if thd else None)
        if self.rotary is not None:
            query, key = self._rope(query, key, packed_seq_params if thd else None)
        if thd:
            return self._forward_thd(query, key, value, packed_seq_params)
        return self._forward_sbhd(query, key, value, attention_mask)

    def _rope(
        self, query: torch.Tensor, key: torch.Tensor, psp: PackedSeqParams | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE on query and key: per-document positions for THD, ``0..s-1`` for ``[s, b, h, d]``."""
        if psp is not None:
            cos, sin = _packed_cos_sin(psp, self.rotary, query)
        else:
            cos, sin = self.rotary.for_length(query.shape[0], query.device, query.dtype)
            cos, sin = cos[:, None, None], sin[:, None, None]
        rotate = apply_rotary_pair_fused if getattr(self.config, "cuda_fast_kernels", False) else apply_rotary_pair
        return rotate(query, key, cos, sin)

    def _forward_sbhd(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        seq_len, batch = query.shape[0], query.shape[1]
        # [s, b, h, d] -> [b, h, s, d]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))
        mask = None
        if attention_mask is not None:
            # megatron convention: True = masked out, [b or 1, 1, s, s]; SDPA wants True = attend.
            mask = ~attention_mask.to(torch.bool)
        left = _window_left(self.config, seq_len)
        if left is not None:
            band = _band_mask(seq_len, left, query.device)
            mask = band if mask is None else mask & band
        out = self._sdpa(q, k, v, mask)
        # [b, h, s, d] -> [s, b, h*d]
        return out.permute(2, 0, 1, 3).reshape(seq_len, batch, -1)

    def _forward_thd(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, psp: PackedSeqParams
    ) -> torch.Tensor:
        if self._use_varlen(query):
            cu = _thd_cu(psp, query.device)  # no copy when already int32 on this device
            max_len = _thd_max_len(psp, cu)
            left = _window_left(self.config, max_len)
            max_len = _bucket(max_len, query.shape[0])
            out = self._varlen(query, key, value, (cu, cu), (max_len, max_len), left)
        else:
            _, lengths, max_len = _thd_boundaries(psp, query.device)
            out = self._per_document(query, key, value, lengths, _window_left(self.config, max_len))
        return out.reshape(out.shape[0], -1)  # [t, h, d] -> [t, h*d]

    def _varlen(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        cu: tuple[torch.Tensor, torch.Tensor],
        max_len: tuple[int, int],
        left: int | None,
    ) -> torch.Tensor:
        """Varlen flash attention with causal masking aligned to the end of each key sequence (flash-attention's
        convention: with fewer queries than keys, query ``i`` of a sequence sits at key position ``k - q + i``):
        FA4 when ``config.attention_kernel`` allows and it runs here, else PyTorch's kernels directly when this
        torch allows (:mod:`~sft_bridge_port.models.flash_varlen`), else ``varlen_attn``."""
        if self._use_cute(query, value):
            return cute_varlen(query, key, value, cu[0], cu[1], max_len[0], max_len[1], self.softmax_scale, left)
        if direct_flash_supported():
            return flash_varlen(query, key, value, cu[0], cu[1], max_len[0], max_len[1], self.softmax_scale, left)
        from torch.nn.attention.varlen import varlen_attn

        names, kwargs = _varlen_kwargs(), {}
        if "scale" in names:  # torch 2.11 has no scale argument: _use_varlen checked it is the default
            kwargs["scale"] = self.softmax_scale
        if "enable_gqa" in names:
            kwargs["enable_gqa"] = query.shape[1] != key.shape[1]
        if "window_size" in names:
            kwargs["window_size"] = (-1, 0) if left is None else (left, 0)
        else:  # torch 2.10: causal flag, no sliding window (_use_varlen checked)
            kwargs["is_causal"] = True
        return varlen_attn(query, key, value, cu[0], cu[1], max_len[0], max_len[1], **kwargs)

    def _forward_cp(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        psp: PackedSeqParams | None,
    ) -> torch.Tensor:
        """Context-parallel attention: ``[t, h*d]`` for THD inputs, ``[s, b, h*d]`` for sbhd inputs."""
        if attention_mask is not None:
            raise ValueError(
                "context_parallel_size > 1 supports causal attention only; the batch carries an explicit "
                "attention_mask (drop it: batches are causal by default)"
            )
        group = cp_group_of(self._pg_collection)
        rank = torch.distributed.get_rank(group)
        if psp is not None:
            layout = _thd_cp_layout(psp, self.cp_size, rank, query.device)
        else:  # [s_local, b, h, d] -> [b * s_local, h, d]: each row is one document of s_local * P tokens
            seq_local, rows = query.shape[0], query.shape[1]
            layout = _row_cp_layout(rows, seq_local * self.cp_size, self.cp_size, rank, query.device)
            query, key, value = (x.transpose(0, 1).reshape(rows * seq_local, *x.shape[2:]) for x in (query, key, value))
        if query.shape[0] != layout.local_tokens:
            raise ValueError(
                f"context parallel rank {rank} holds {query.shape[0]} tokens but the batch's cu_seqlens give it "
                f"{layout.local_tokens}; the batch must be split with sft_bridge_port.models.context_parallel "
                "(the training engine's get_batch does it) and PackedSeqParams must keep the global cu_seqlens"
            )
        if self.rotary is not None:
            cos, sin = _cp_cos_sin(layout, self.rotary, query.dtype)
            query, key = apply_rotary(query, cos, sin), apply_rotary(key, cos, sin)
        keys, values = expand_keys(gather_first_dim(torch.stack((key, value), dim=1), group), layout)
        left = _window_left(self.config, 2 * self.cp_size * layout.max_q)
        if self._use_varlen(query):
            max_len = (_bucket(layout.max_q, query.shape[0]), _bucket(layout.max_k, keys.shape[0]))
            out = self._varlen(query, keys, values, (layout.cu_q, layout.cu_k), max_len, left)
        else:
            out = chunked_attention(
                query, keys, values, layout, scale=self.softmax_scale, left=left, dropout_p=self._dropout()
            )
        if psp is not None:
            return out.reshape(out.shape[0], -1)
        return out.reshape(rows, seq_local, -1).transpose(0, 1)  # [b * s_local, h, d] -> [s_local, b, h*d]

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """PyTorch SDPA on [b, h, s, d] inputs: causal unless ``mask`` (True = attend) is given; GQA when k has fewer heads."""
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self._dropout(),
            is_causal=mask is None,
            scale=self.softmax_scale,
            enable_gqa=q.shape[1] != k.shape[1],
        )

    def _use_varlen(self, query: torch.Tensor) -> bool:
        """Fused varlen kernel when torch has it and can express this layer's scale and window."""
        if not (query.is_cuda and query.dtype in (torch.bfloat16, torch.float16) and self._dropout() == 0.0):
            return False
        if direct_flash_supported() or self._use_cute(query, query):
            return True
        kwargs = _varlen_kwargs()
        if kwargs is None:
            return False
        default_scale = math.isclose(self.softmax_scale, 1.0 / math.sqrt(query.shape[-1]), rel_tol=1e-6)
        return ("scale" in kwargs or default_scale) and (
            "window_size" in kwargs or getattr(self.config, "window_size", None) is None
        )

    def _use_cute(self, query: torch.Tensor, value: torch.Tensor) -> bool:
        """FA4 (``flash_attn.cute``) for this call: allowed by ``config.attention_kernel`` (``"auto"``: from
        ``AUTO_MIN_TOKENS`` query tokens) and able to run here; ``"fa4"`` where it cannot run is an error."""
        kernel = getattr(self.config, "attention_kernel", "auto")
        if declined(kernel, "fa2", query.shape[0]):
            return False
        usable = cute_supported(query, value.shape[-1])
        if kernel == "fa4" and not usable:
            raise RuntimeError(
                f"attention_kernel='fa4' but flash-attention 4 cannot run this call (device {query.device}, dtype "
                f"{query.dtype}, head dim {query.shape[-1]}): it needs a Hopper/Blackwell GPU, bf16/fp16 and head "
                "dims 8..128 (256 on Hopper) in steps of 8; set attention_kernel='auto' to use PyTorch's kernels"
            )
        return usable

    def _per_document(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, lengths: list[int], left: int | None
    ) -> torch.Tensor:
        """Reference path (CPU, fp32, dropout): one causal SDPA call per document."""
        total = sum(lengths)
        if total != query.shape[0]:
            raise ValueError(f"cu_seqlens cover {total} tokens but the packed batch holds {query.shape[0]}")
        outs = []
        for q, k, v in zip(*(x.split(lengths) for x in (query, key, value))):
            n = q.shape[0]
            if n == 0:
                continue
            # [n, h, d] -> [1, h, n, d]
            q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
            doc_left = _window_left(self.config, n) if left is not None else None
            mask = _band_mask(n, doc_left, query.device) if doc_left is not None else None
            o = self._sdpa(q, k, v, mask)
            outs.append(o.squeeze(0).transpose(0, 1))  # [n, h, d]
        return torch.cat(outs, dim=0)
