"""The two systems under test, each as ``build(...) -> System`` whose ``step(micro_batches)`` is one optimizer step.

``micro_batches`` is this rank's list of micro-batches, each a list of packs (:mod:`bench.stream`).

``ours``: the training engine's own pieces: ``GPTModelProvider`` (fast spec) -> megatron DDP
(``grad_reduce_in_fp32`` as Bridge's ``bf16_mixed``) -> megatron-core optimizer (Adam, fp32 master weights,
grad clipping 1.0) -> ``training.train.train_step`` with ``training.gpt_step.forward_step`` over
Bridge-format packed batches. LoRA: ``sft_bridge_port.peft.LoRA()`` applied before DDP wrapping.

``hf``: transformers ``AutoModelForCausalLM`` in bf16 with SDPA (or ``flex_attention``), optionally
``torch.compile``-d, ``torch.optim.AdamW(fused=True)`` on the bf16 weights, grad clipping 1.0; LoRA through
``peft`` (r=32, alpha=32 on q/k/v/o/gate/up/down: the modules our LoRA's default targets cover).

Variants (``ours:a+b``): ``mcore_rope`` (megatron-core's own RoPE instead of ours), ``ce_fused``
(``cross_entropy_loss_fusion=True``), ``compile`` (``torch.compile`` each transformer layer), ``recompute``
(full activation recompute), ``distopt`` (distributed optimizer), ``lce`` (chunked linear cross-entropy,
``linear_ce_chunk_tokens=1024``), ``gaf``
(``gradient_accumulation_fusion``: weight grads GEMM-accumulated into fp32 ``main_grad``), ``swiglu``
(``bias_activation_fusion``: megatron's torch.compile-d SwiGLU), ``fast`` (= lce+gaf+swiglu), ``bf16grad``
(``grad_reduce_in_fp32=False``: bf16 main grads; changes numerics, stated wherever reported), ``overlap``
(``overlap_grad_reduce``: data-parallel gradient reduction behind the backward); ``sync_nan``, ``pageable``,
``eager_rope``, ``varlen_op``, ``rope_separate``: each undoes one round-3/4 change (:func:`_runtime_patches`); ``pure``
(``mixed_precision='bf16_pure'``: bf16 weights, grads and Adam moments, no fp32 master weights: the baseline's own
precision), ``keeplogits`` (``linear_ce_keep_logits=True``: the LM head's backward reads the forward's logits
instead of recomputing them; the default keeps them up to 4 GiB of logits, so this matters with
``unfused``/``lce``), ``recompute_logits``
(``linear_ce_keep_logits=False``: round 3's recompute), ``fa2`` / ``fa4`` (round 5: ``attention_kernel``
forced to PyTorch's flash-attention 2 / to flash-attention 4; plain ``ours`` is ``"auto"``: FA4 where installed),
``torchnorm`` (round 5: ``norm_kernel="torch"`` instead of quack's RMSNorm), ``eager_scale`` (round 5: megatron-core's
own ``grad_data *= 1/tokens`` instead of the vectorised one), ``torchmlp`` (round 6: ``mlp_kernel="torch"``: megatron's
MLP with a separate SwiGLU kernel instead of SwiGLU in quack's GEMM epilogues), ``torchce`` (round 7:
``ce_kernel="torch"``: the compiled CE kernels and cuBLAS head GEMMs instead of quack's one-pass cross-entropy),
``mcore_add`` (round 7: megatron's residual adds instead of the adds inside the next RMSNorm's kernel),
``cublas_head`` (round 7: the quack CE path's LM-head forward and weight-gradient GEMMs on cuBLAS instead of quack).
HF: ``hf:compile``, ``hf:flex``, ``hf:fa4`` (``attn_implementation="flash_attention_4"``: the same FA4 kernels
as ours, documents from ``position_ids``), ``hf:fp32master`` (fp32 weights/grads/AdamW + bf16 autocast: the HF Trainer's
``bf16=True`` recipe, the same mixed-precision state as ours, for a like-for-like memory comparison).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.stream import Pack, join_packs, stack_packs

OURS_VARIANTS = frozenset({
    "mcore_rope", "ce_fused", "compile", "recompute", "distopt", "lce", "gaf", "swiglu", "fast", "unfused", "bf16grad",
    "overlap", "sync_nan", "pageable", "eager_rope", "varlen_op", "rope_separate", "pure", "keeplogits",
    "recompute_logits", "fa2", "fa4", "torchnorm", "eager_scale", "torchmlp", "torchce", "mcore_add",
    "cublas_head",
})  # fmt: skip
HF_VARIANTS = frozenset({"compile", "flex", "fa4", "fp32master"})
HF_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class System:
    name: str
    step: Callable[[list[list[Pack]]], Any]
    n_trainable: int
    close: Callable[[], None]


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _provider(hf_cfg: dict, seq: int, variants: set[str]):
    from sft_bridge_port.models import provider_from_hf_config

    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if on_gpu else torch.float32
    provider = provider_from_hf_config(
        hf_cfg, seq_length=seq, bf16=on_gpu, params_dtype=dtype, use_cpu_initialization=not on_gpu
    )
    provider.calculate_per_token_loss = True  # as training.setup.build_model
    # The HF model has no dropout unless its config says so; megatron-core's default attention_dropout is 0.1.
    provider.attention_dropout = float(hf_cfg.get("attention_dropout", 0.0))
    if "ce_fused" in variants:
        provider.cross_entropy_loss_fusion = True
    # "ours" alone is what users get (GPTModelProvider.cuda_fast_kernels is on by default); "unfused" measures
    # megatron-core's plain paths, and the named variants switch single kernels on over it.
    if "unfused" in variants or any(v in variants for v in ("lce", "gaf", "swiglu")):
        provider.cuda_fast_kernels = False
    fast = "fast" in variants
    if fast or "lce" in variants:
        provider.linear_ce_chunk_tokens = 1024
    if fast or "gaf" in variants:
        provider.gradient_accumulation_fusion = True
    if fast or "swiglu" in variants:
        provider.bias_activation_fusion = True
    if "keeplogits" in variants:
        provider.linear_ce_keep_logits = True
    if "recompute_logits" in variants:
        provider.linear_ce_keep_logits = False
    if "torchnorm" in variants:
        provider.norm_kernel = "torch"
    if "torchmlp" in variants:
        provider.mlp_kernel = "torch"
    if "torchce" in variants:
        provider.ce_kernel = "torch"
    for kernel in ("fa2", "fa4"):
        if kernel in variants:
            provider.attention_kernel = kernel
    if "recompute" in variants:
        provider.recompute_granularity, provider.recompute_method, provider.recompute_num_layers = "full", "uniform", 1
    return provider


def _compile_layers(chunks: list[torch.nn.Module]) -> None:
    from sft_bridge_port.utils.dist_ckpt import unwrap

    for layer in unwrap(chunks[0]).decoder.layers:
        layer.compile()


def build_ours(hf_cfg: dict, seq: int, micro_batches: int, mode: str, variants: set[str]) -> System:
    """Our engine, exactly as ``training.setup`` wires it (call inside ``parallel_context()``).

    ``seq`` is the length of one micro-batch row (packs per micro-batch x pack size); under ``torchrun`` every
    rank is a data-parallel replica and the global batch is ``micro_batches x world size`` rows.
    """
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig

    from sft_bridge_port.config.mixed_precision import get_mixed_precision_config
    from sft_bridge_port.config.training_configs import SchedulerConfig
    from sft_bridge_port.models.provider import GPTModelProvider
    from sft_bridge_port.training.gpt_step import forward_step
    from sft_bridge_port.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler
    from sft_bridge_port.training.train import LoopSpec, train_step

    provider = _provider(hf_cfg, seq, variants)
    on_gpu, distopt = torch.cuda.is_available(), "distopt" in variants
    if distopt and "pure" in variants:
        raise ValueError("ours:pure keeps no fp32 master weights; the distributed optimizer always does (drop one)")
    overlap = "overlap" in variants
    ddp = DistributedDataParallelConfig(
        use_distributed_optimizer=distopt, average_in_collective=False, overlap_grad_reduce=overlap
    )
    opt_cfg = OptimizerConfig(
        optimizer="adam", lr=1e-5, min_lr=1e-5, weight_decay=0.0, clip_grad=1.0, use_distributed_optimizer=distopt
    )
    if on_gpu:  # the preset a recipe names, applied as runtime_config_update does (model fields set in _provider)
        get_mixed_precision_config("bf16_pure" if "pure" in variants else "bf16_mixed").setup(None, opt_cfg, ddp)
    if "bf16grad" in variants:
        ddp.grad_reduce_in_fp32 = False
    hook = None
    if mode == "lora":
        from sft_bridge_port.peft import LoRA

        peft = LoRA()
        hook = lambda chunks: peft(chunks, training=True) or chunks  # noqa: E731
    patches = contextlib.ExitStack()
    if "mcore_rope" in variants:
        patches.enter_context(_patched(GPTModelProvider, "_move_rope_into_attention", lambda self, model: None))
    if "mcore_add" in variants:
        from sft_bridge_port.models import provider as provider_module

        patches.enter_context(_patched(provider_module, "link_residual_norms", lambda model: 0))
    with patches:
        model = provider.provide_distributed_model(ddp_config=ddp, pre_wrap_hook=hook)
    if "compile" in variants:
        _compile_layers(model)
    optimizer = build_optimizer(opt_cfg, model)
    scheduler = build_scheduler(optimizer, SchedulerConfig(lr_decay_style="constant"), opt_cfg, 10**6, micro_batches)
    attach_schedule_hooks(model, optimizer)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    spec = LoopSpec(micro_batches, 1, micro_batches * world, seq)
    step_fn = functools.partial(forward_step, None)

    def step(batches: list[list[Pack]]):
        data = iter([join_packs(packs).bridge_batch() for packs in batches])
        return train_step(step_fn, data, model, optimizer, scheduler, spec)

    trainable = sum(p.numel() for p in model[0].parameters() if p.requires_grad)
    return System("ours", step, trainable, _runtime_patches(variants).close)


class _ImmediateLossChecks:
    """Stand-in for ``losses.deferred_loss_checks``: records nothing, so every micro-batch's check syncs."""

    def __call__(self):
        return contextlib.nullcontext(self)

    def raise_if_bad(self) -> None:
        pass


def _pageable_copy(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def _runtime_patches(variants: set[str]) -> contextlib.ExitStack:
    """Switches that act while the system steps (closed by ``System.close``): the A/B of round 3's host-side
    changes. ``sync_nan``: the per-micro-batch NaN check syncs (Bridge's way); ``pageable``: batches are copied
    from pageable memory; ``eager_rope``: RoPE without ``torch.compile``; ``varlen_op`` (round 4): attention
    through ``varlen_attn``'s custom ops instead of the direct kernel calls; ``rope_separate`` (round 4): one
    compiled RoPE call per tensor instead of one for query and key."""
    from sft_bridge_port.models import attention
    from sft_bridge_port.models.rope import apply_rotary_pair
    from sft_bridge_port.training import batch, losses

    stack = contextlib.ExitStack()
    if "sync_nan" in variants:
        stack.enter_context(_patched(losses, "deferred_loss_checks", _ImmediateLossChecks()))
    if "pageable" in variants:
        stack.enter_context(_patched(batch, "_to", _pageable_copy))
    if "eager_rope" in variants:
        stack.enter_context(_patched(attention, "apply_rotary_pair_fused", apply_rotary_pair))
    if "varlen_op" in variants:
        stack.enter_context(_patched(attention, "direct_flash_supported", lambda: False))
    if "rope_separate" in variants:
        stack.enter_context(_patched(attention, "apply_rotary_pair_fused", _rotary_compiled_separately))
    if "eager_scale" in variants:
        from megatron.core.distributed.param_and_grad_buffer import _ParamAndGradBuffer

        stack.enter_context(_patched(_ParamAndGradBuffer, "scale_gradients", _megatron_scale_gradients))
    if "cublas_head" in variants:
        from sft_bridge_port.models import quack_ce
        from sft_bridge_port.models.fused_ops import wgrad_gemm_accum

        stack.enter_context(_patched(quack_ce, "head_logits", lambda h, w, out: torch.mm(h, w.t(), out=out)))
        stack.enter_context(_patched(quack_ce, "head_wgrad", lambda g, x, acc: wgrad_gemm_accum(x, g, acc)))
    return stack


def _megatron_scale_gradients(self, scaling_factor) -> None:
    """megatron-core's own ``_ParamAndGradBuffer.scale_gradients`` body (round 5's A/B)."""
    self.grad_data *= scaling_factor


@functools.cache
def _compiled_rotary() -> Any:
    from sft_bridge_port.models.rope import apply_rotary

    return torch.compile(apply_rotary)


def _rotary_compiled_separately(q, k, cos, sin):
    """Round 3's RoPE: one compiled call for the query and another for the key."""
    rotate = _compiled_rotary()
    return rotate(q, cos, sin), rotate(k, cos, sin)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any):
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _hf_model(hf_cfg: dict, mode: str, variants: set[str]) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    kwargs = {k: v for k, v in hf_cfg.items() if k not in ("architectures", "model_type", "torch_dtype")}
    config = AutoConfig.for_model(hf_cfg["model_type"], **kwargs)
    on_gpu = torch.cuda.is_available()
    attn = "flex_attention" if "flex" in variants else "flash_attention_4" if "fa4" in variants else "sdpa"
    dtype = torch.bfloat16 if on_gpu and "fp32master" not in variants else torch.float32
    with torch.device(_device()):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    model.train()
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=32, lora_alpha=32, lora_dropout=0.0, target_modules=HF_LORA_TARGETS))
    return model


def build_hf(hf_cfg: dict, seq: int, micro_batches: int, mode: str, variants: set[str]) -> System:
    """transformers baseline on the same packs: per-micro-batch mean loss / micro_batches, fused AdamW."""
    model = _hf_model(hf_cfg, mode, variants)
    params = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if "compile" in variants else model
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0, fused=torch.cuda.is_available())
    device = _device()
    autocast = "fp32master" in variants and torch.cuda.is_available()

    def step(batches: list[list[Pack]]):
        for packs in batches:
            ids, pos = (t.to(device, non_blocking=True) for t in stack_packs(packs))
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = forward(input_ids=ids, position_ids=pos, labels=ids).loss
            (loss / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return System("hf", step, sum(p.numel() for p in params), lambda: None)
