"""The two systems under test, each as ``build(...) -> System`` whose ``step(packs)`` is one optimizer step.

``ours``: the training engine's own pieces: ``GPTModelProvider`` (fast spec) -> megatron DDP
(``grad_reduce_in_fp32`` as Bridge's ``bf16_mixed``) -> megatron-core optimizer (Adam, fp32 master weights,
grad clipping 1.0) -> ``training.train.train_step`` with ``training.gpt_step.forward_step`` over
Bridge-format packed batches. LoRA: ``sft_bridge_port.peft.LoRA()`` applied before DDP wrapping.

``hf``: transformers ``AutoModelForCausalLM`` in bf16 with SDPA (or ``flex_attention``), optionally
``torch.compile``-d, ``torch.optim.AdamW(fused=True)`` on the bf16 weights, grad clipping 1.0; LoRA through
``peft`` (r=32, alpha=32 on q/k/v/o/gate/up/down: the modules our LoRA's default targets cover).

Variants (``ours:a+b``): ``mcore_rope`` (megatron-core's own RoPE instead of ours), ``ce_fused``
(``cross_entropy_loss_fusion=True``), ``compile`` (``torch.compile`` each transformer layer), ``recompute``
(full activation recompute), ``rope_compile`` (``torch.compile`` the RoPE rotation), ``distopt`` (distributed
optimizer), ``lce`` (chunked linear cross-entropy, ``linear_ce_chunk_tokens=1024``), ``gaf``
(``gradient_accumulation_fusion``: weight grads GEMM-accumulated into fp32 ``main_grad``), ``swiglu``
(``bias_activation_fusion``: megatron's torch.compile-d SwiGLU), ``fast`` (= lce+gaf+swiglu), ``bf16grad``
(``grad_reduce_in_fp32=False``: bf16 main grads; changes numerics, stated wherever reported).
HF: ``hf:compile``, ``hf:flex``, ``hf:fp32master`` (fp32 weights/grads/AdamW + bf16 autocast: the HF Trainer's
``bf16=True`` recipe, the same mixed-precision state as ours, for a like-for-like memory comparison).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable

import torch

from bench.stream import Pack

HF_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class System:
    name: str
    step: Callable[[list[Pack]], Any]
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
    if "recompute" in variants:
        provider.recompute_granularity, provider.recompute_method, provider.recompute_num_layers = "full", "uniform", 1
    return provider


def _compile_layers(chunks: list[torch.nn.Module]) -> None:
    from sft_bridge_port.utils.dist_ckpt import unwrap

    for layer in unwrap(chunks[0]).decoder.layers:
        layer.compile()


def build_ours(hf_cfg: dict, seq: int, micro_batches: int, mode: str, variants: set[str]) -> System:
    """Our engine, exactly as ``training.setup`` wires it (call inside ``parallel_context()``)."""
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig

    from sft_bridge_port.config.training_configs import SchedulerConfig
    from sft_bridge_port.models.provider import GPTModelProvider
    from sft_bridge_port.training.gpt_step import forward_step
    from sft_bridge_port.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler
    from sft_bridge_port.training.train import LoopSpec, train_step

    provider = _provider(hf_cfg, seq, variants)
    on_gpu, distopt = torch.cuda.is_available(), "distopt" in variants
    ddp = DistributedDataParallelConfig(
        grad_reduce_in_fp32="bf16grad" not in variants, use_distributed_optimizer=distopt, average_in_collective=False
    )
    hook = None
    if mode == "lora":
        from sft_bridge_port.peft import LoRA

        peft = LoRA()
        hook = lambda chunks: peft(chunks, training=True) or chunks  # noqa: E731
    patch = (
        _patched(GPTModelProvider, "_move_rope_into_attention", lambda self, model: None)
        if "mcore_rope" in variants
        else contextlib.nullcontext()
    )
    with patch:
        model = provider.provide_distributed_model(ddp_config=ddp, pre_wrap_hook=hook)
    if "compile" in variants:
        _compile_layers(model)
    if "rope_compile" in variants:
        import sft_bridge_port.models.attention as attention

        attention.apply_rotary = torch.compile(attention.apply_rotary, dynamic=False)
    opt_cfg = OptimizerConfig(
        optimizer="adam", lr=1e-5, min_lr=1e-5, weight_decay=0.0, clip_grad=1.0, bf16=on_gpu,
        params_dtype=provider.params_dtype, use_distributed_optimizer=distopt,
    )  # fmt: skip
    optimizer = build_optimizer(opt_cfg, model)
    scheduler = build_scheduler(optimizer, SchedulerConfig(lr_decay_style="constant"), opt_cfg, 10**6, micro_batches)
    attach_schedule_hooks(model, optimizer)
    spec = LoopSpec(micro_batches, 1, micro_batches, seq)
    step_fn = functools.partial(forward_step, None)

    def step(packs: list[Pack]):
        return train_step(step_fn, iter([p.bridge_batch() for p in packs]), model, optimizer, scheduler, spec)

    trainable = sum(p.numel() for p in model[0].parameters() if p.requires_grad)
    return System("ours", step, trainable, lambda: None)


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
    attn = "flex_attention" if "flex" in variants else "sdpa"
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

    def step(packs: list[Pack]):
        for pack in packs:
            ids = pack.tokens.to(device, non_blocking=True)
            pos = pack.position_ids().to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                loss = forward(input_ids=ids, position_ids=pos, labels=ids).loss
            (loss / len(packs)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return System("hf", step, sum(p.numel() for p in params), lambda: None)
