"""Chunked linear cross-entropy: the LM head and the per-token loss without materialising ``[tokens, vocab]`` logits.

megatron-core computes the loss as ``logits = output_layer(h)`` (bf16 ``[s, b, V]``), then
``vocab_parallel_cross_entropy`` upcasts the whole tensor to fp32 and runs several elementwise passes over it, and
autograd keeps the logits and an fp32 softmax for the backward. With Llama 3's 128k vocabulary and 4096 tokens that
is 1 GiB of bf16 logits plus 2 GiB per fp32 copy, and ~10 ms of memory-bound kernels per micro-batch on an H100.

:class:`LinearCrossEntropy` walks the tokens in chunks (default 1024): per chunk it computes the bf16 logits, their
fp32 log-sum-exp and the target logit, and keeps only ``lse`` (4 bytes per token). The backward recomputes each
chunk's logits (one extra LM-head GEMM), forms ``(softmax - onehot) * grad`` and accumulates the input and weight
gradients (the weight gradient in fp32). The arithmetic is megatron's: bf16 logits from the same GEMM, fp32
softmax, and megatron's treatment of a label outside ``[0, V)`` (see :func:`_lse_and_target`).

With ``gradient_accumulation_fusion`` and megatron DDP the weight gradient goes straight into the fp32
``main_grad`` buffer, following megatron's own protocol for fused linear layers (``grad_added_to_main_grad``, and
no dummy gradient at all for a head tied to the embedding on the same stage, whose ``zero_out_wgrad`` makes DDP add
the embedding's gradient): no ``[V, h]`` fp32 scratch, no cast to bf16, no extra DDP pass over the LM head.
:func:`default_chunk_tokens` sizes the chunks so one chunk's logits hold about 2^29 elements (4096 tokens for a
128k vocabulary): fewer, longer weight-gradient GEMMs over the same ``[V, h]`` accumulator.

``keep_logits`` trades memory for the recompute: the forward keeps every chunk's bf16 logits (``2·tokens·V`` bytes,
2 GiB for 8192 tokens of a 128k vocabulary, freed by the backward) and the backward reads them instead of running
the LM-head GEMM again. The values are the same either way (the same GEMM produced them). The model's default
(``config.linear_ce_keep_logits=None``) keeps them up to :data:`KEEP_LOGITS_MAX_ELEMENTS` per micro-batch.

:class:`ChunkedLossGPTModel` plugs it in where ``GPTModel`` computes the loss when called with ``labels`` (the
``[b, s]`` fp32 per-token loss contract is unchanged). It applies only where the result is provably the same as
megatron's path: tensor-parallel size 1, no multi-token prediction, no fp16 cross entropy, a plain
``ColumnParallelLinear`` output layer without hooks (so LoRA on the head, or forward hooks of the distributed
optimizer's parameter gather, fall back), no inference context. Otherwise it calls megatron-core's own code.
On Hopper/Blackwell with quack installed, :class:`~sft_bridge_port.models.quack_ce.QuackLinearCrossEntropy` does
the same job with one pass over each chunk's logits (``config.ce_kernel``; models/quack_ce.py).

Example (``[s=3, b=1]`` tokens, vocab 5)::

    h = torch.randn(3, 1, 8); w = torch.randn(5, 8); labels = torch.tensor([[1, 4, 0]])
    loss = linear_cross_entropy(h, w, labels, chunk_tokens=2)      # [1, 3] fp32 == CE(h @ w.T, labels)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from megatron.core.models.gpt import GPTModel

from sft_bridge_port.models.flash_cute import declined
from sft_bridge_port.models.fused_ops import accumulated_wgrad, wgrad_accumulator, wgrad_gemm_accum
from sft_bridge_port.models.quack_ce import QuackLinearCrossEntropy, quack_ce_runs

_COMPILED: dict[str, Any] = {}
CHUNK_ELEMENTS = 1 << 29  # logits elements per chunk (1 GiB in bf16) for default_chunk_tokens
KEEP_LOGITS_MAX_ELEMENTS = 1 << 31  # default keep_logits: kept logits of one micro-batch stay within 4 GiB (bf16)


def default_chunk_tokens(vocab_size: int, minimum: int = 1024, multiple: int = 256) -> int:
    """Tokens per chunk whose bf16 logits hold about :data:`CHUNK_ELEMENTS` (never fewer than ``minimum``)."""
    tokens = CHUNK_ELEMENTS // max(1, int(vocab_size))
    return max(minimum, tokens - tokens % multiple)


def _lse_and_target(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 log-sum-exp of each row and the loss ``lse - logit[label]``.

    A label outside ``[0, V)`` gets megatron's value: its target logit is the row maximum (megatron zeroes the
    target of max-shifted logits), and its gradient is the plain softmax.
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    valid = (labels >= 0) & (labels < logits.shape[-1])
    target = logits.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return lse, lse - torch.where(valid, target, logits.amax(dim=-1))


def _grad_logits(logits: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``(softmax - onehot(label)) * grad`` in fp32, returned in the logits' dtype (megatron's CE backward)."""
    probs = torch.exp(logits.float() - lse.unsqueeze(-1))
    vocab = torch.arange(logits.shape[-1], device=logits.device)
    onehot = (vocab.unsqueeze(0) == labels.unsqueeze(-1)).to(probs.dtype)  # all-zero row for out-of-range labels
    return ((probs - onehot) * grad.unsqueeze(-1)).to(logits.dtype)


def _kernel(name: str):
    """The elementwise parts, ``torch.compile``-d once per process on CUDA (static chunk shapes), eager on CPU."""
    fn = {"fwd": _lse_and_target, "bwd": _grad_logits}[name]
    if not torch.cuda.is_available():
        return fn
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=False)
    return _COMPILED[name]


class LinearCrossEntropy(torch.autograd.Function):
    """Per-token CE of ``hidden @ weight.T`` against ``labels``, ``chunk`` tokens at a time (2-D inputs)."""

    @staticmethod
    def forward(
        ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int, fuse_wgrad: bool = False,
        keep_logits: bool = False,
    ) -> torch.Tensor:
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        loss = torch.empty_like(lse)
        kept = hidden.new_empty(hidden.shape[0], weight.shape[0]) if keep_logits else None
        fwd = _kernel("fwd")
        for start in range(0, hidden.shape[0], chunk):
            end = min(start + chunk, hidden.shape[0])
            out = None if kept is None else kept[start:end]
            lse[start:end], loss[start:end] = fwd(torch.mm(hidden[start:end], weight.t(), out=out), labels[start:end])
        ctx.save_for_backward(hidden, weight, labels, lse, kept)
        ctx.chunk, ctx.fuse_wgrad = chunk, fuse_wgrad
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        hidden, weight, labels, lse, kept = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = wgrad_accumulator(weight, ctx.fuse_wgrad) if need_w else None
        bwd = _kernel("bwd")
        grad_loss = grad_loss.float()
        for start in range(0, hidden.shape[0], ctx.chunk):
            end = min(start + ctx.chunk, hidden.shape[0])
            h = hidden[start:end]
            logits = h @ weight.t() if kept is None else kept[start:end]
            g = bwd(logits, lse[start:end], labels[start:end], grad_loss[start:end])
            if need_h:
                torch.mm(g, weight, out=grad_h[start:end])
            if need_w:
                wgrad_gemm_accum(h, g, grad_w)
        grad_w = None if grad_w is None else accumulated_wgrad(weight, grad_w, hidden.dtype)
        return grad_h, grad_w, None, None, None, None


def label_bounds(labels: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """``[min, max]`` of ``labels`` on its way to the host, and the event that says it arrived (None on CPU).

    Started when the forward begins, read when the loss is computed: by then the GPU has long passed this point,
    so reading it stalls neither side (a plain ``.item()`` there would drain the GPU's queue).
    """
    if labels.numel() == 0:
        return torch.tensor([0, 0]), None
    bounds = torch.stack([labels.min(), labels.max()])
    if not bounds.is_cuda:
        return bounds, None
    bounds = bounds.to("cpu", non_blocking=True)  # into pinned memory, asynchronously
    event = torch.cuda.Event()
    event.record()
    return bounds, event


def label_bounds_fit(started: tuple[torch.Tensor, torch.cuda.Event | None], vocab: int) -> bool:
    """Whether the bounds from :func:`label_bounds` lie in ``[0, vocab)`` (waits for their copy if needed)."""
    bounds, event = started
    if event is not None:
        event.synchronize()
    low, high = bounds.tolist()
    return 0 <= low and high < vocab


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = 1024,
    fuse_wgrad: bool = False, keep_logits: bool = False, kernel: str = "torch",
    labels_in_range: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """Per-token loss ``[b, s]`` fp32 of ``hidden [s, b, h]`` through the LM head ``weight [V, h]``.

    Same values as ``megatron.core.tensor_parallel.vocab_parallel_cross_entropy(hidden @ weight.T, labels.T).T``
    at tensor-parallel size 1, without the ``[s, b, V]`` logits. ``fuse_wgrad``: accumulate the weight gradient
    into megatron DDP's ``weight.main_grad`` (the model passes ``config.gradient_accumulation_fusion``).
    ``keep_logits``: keep the bf16 logits for the backward instead of recomputing them (module doc).
    ``kernel``: ``"auto"`` / ``"quack"`` / ``"torch"`` (``GPTModelProvider.ce_kernel``; models/quack_ce.py);
    ``labels_in_range`` answers whether every label lies in ``[0, V)`` (default: checked here, a host sync, only
    when quack's kernels could run otherwise).

    Raises:
        ValueError: ``chunk_tokens`` is not positive, or the shapes disagree (names them).
    """
    if chunk_tokens <= 0:
        raise ValueError(f"linear_ce_chunk_tokens must be a positive number of tokens, got {chunk_tokens}")
    s, b, h = hidden.shape
    if tuple(labels.shape) != (b, s) or weight.shape[-1] != h:
        raise ValueError(
            f"linear_cross_entropy: hidden {tuple(hidden.shape)} [s, b, h], labels {tuple(labels.shape)} [b, s] and "
            f"weight {tuple(weight.shape)} [V, h] do not match"
        )
    flat_labels = labels.transpose(0, 1).reshape(-1).long()
    flat = hidden.reshape(s * b, h)
    in_range = labels_in_range or (lambda: label_bounds_fit(label_bounds(flat_labels), weight.shape[0]))
    fn = QuackLinearCrossEntropy if quack_ce_runs(kernel, flat, weight, in_range) else LinearCrossEntropy
    loss = fn.apply(flat, weight, flat_labels, int(chunk_tokens), bool(fuse_wgrad), bool(keep_logits))
    return loss.view(s, b).transpose(0, 1).contiguous()


class ChunkedLossGPTModel(GPTModel):
    """``GPTModel`` whose loss (when called with ``labels``) is :func:`linear_cross_entropy`, where it applies.

    ``config.linear_ce_chunk_tokens`` sets the chunk, ``config.linear_ce_keep_logits`` the recompute,
    ``config.ce_kernel`` the kernels (models/quack_ce.py; the labels' range it needs is fetched from the GPU when
    the forward starts, so it has arrived when the loss is computed); everything
    else (logits without labels, TP > 1, MTP, inference, a wrapped or hooked output layer) is megatron-core's
    ``_postprocess``.
    """

    def forward(self, *args: Any, **kwargs: Any):  # noqa: D102
        labels = kwargs.get("labels", args[4] if len(args) > 4 else None)
        self._label_check = None  # (labels, label_bounds(labels)), started before the layers for ce_kernel
        if isinstance(labels, torch.Tensor) and labels.is_cuda and self.post_process:
            if not declined(getattr(self.config, "ce_kernel", "auto"), "torch", labels.numel()):
                self._label_check = (labels, label_bounds(labels))
        return super().forward(*args, **kwargs)

    def _postprocess(self, hidden_states, input_ids, position_ids, labels, *args, **kwargs):  # noqa: D102
        if labels is not None and not args and self._chunked_loss_applies(kwargs):
            weight = self.shared_embedding_or_output_weight() if self.share_embeddings_and_output_weights else None
            weight = self.output_layer.weight if weight is None else weight
            fuse = bool(getattr(self.config, "gradient_accumulation_fusion", False))
            keep = getattr(self.config, "linear_ce_keep_logits", None)
            if keep is None:
                keep = hidden_states.shape[0] * hidden_states.shape[1] * weight.shape[0] <= KEEP_LOGITS_MAX_ELEMENTS
            check, self._label_check = getattr(self, "_label_check", None), None
            started = check[1] if check is not None and check[0] is labels else None
            in_range = lambda: label_bounds_fit(started or label_bounds(labels), weight.shape[0])  # noqa: E731
            kernel = getattr(self.config, "ce_kernel", "auto")
            return linear_cross_entropy(
                hidden_states, weight, labels, self.config.linear_ce_chunk_tokens, fuse_wgrad=fuse, keep_logits=keep,
                kernel=kernel, labels_in_range=in_range,
            )  # fmt: skip
        return super()._postprocess(hidden_states, input_ids, position_ids, labels, *args, **kwargs)

    def _chunked_loss_applies(self, kwargs: dict[str, Any]) -> bool:
        from megatron.core.tensor_parallel import ColumnParallelLinear

        cfg, head = self.config, getattr(self, "output_layer", None)
        return (
            self.post_process
            and type(head) is ColumnParallelLinear
            and head.bias is None
            and not (head._forward_pre_hooks or head._forward_hooks)
            and cfg.tensor_model_parallel_size == 1
            and not cfg.mtp_num_layers
            and not self.fp16_lm_cross_entropy
            and not getattr(cfg, "use_mup", False)
            and not kwargs.get("mtp_in_postprocess")
            and all(kwargs.get(k) is None for k in ("inference_context", "inference_params", "output_processor"))
            and not torch.is_inference_mode_enabled()
        )
