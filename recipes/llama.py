"""Llama 3 / 3.1 / 3.2 SFT and LoRA recipes with Megatron-Bridge v0.5.1's defaults.

Every recipe: packed SQuAD at seq 4096 (405B: 2048), MBS 1, GBS 8 (405B: 16 SFT / 32 LoRA), 1000 iterations,
50 warm-up, cosine to 0, LR 5e-6 (SFT) / 1e-4 (LoRA), bf16 mixed precision, gc every 100 steps. PEFT recipes
switch the distributed optimizer and the fused cross-entropy off, as Bridge's do. GPU counts assume H100 80GB.
Pass ``hf_path=`` (a local HF folder or hub id) to use other weights of the same architecture.
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.config import CommOverlapConfig, ConfigContainer, get_mixed_precision_config

from recipes.common import bridge_aliases, build_recipe


def _llama(hf_path: str, peft_scheme: Any = None, **deltas: Any) -> ConfigContainer:
    """Llama family defaults: seq 4096, manual gc; PEFT without distributed optimizer or fused CE."""
    is_peft = peft_scheme is not None
    deltas.setdefault("seq_length", 4096)
    return build_recipe(hf_path, peft_scheme=peft_scheme, manual_gc=True, cross_entropy_loss_fusion=not is_peft,
                        distributed_optimizer=False if is_peft else None, **deltas)


def llama32_1b_sft(hf_path: str = "meta-llama/Llama-3.2-1B") -> ConfigContainer:
    """Full SFT of Llama 3.2 1B on 1 GPU."""
    return _llama(hf_path)


def llama32_1b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Llama-3.2-1B") -> ConfigContainer:
    """LoRA (dim 32, alpha 32) of Llama 3.2 1B on 1 GPU."""
    return _llama(hf_path, peft_scheme)


def llama32_3b_sft(hf_path: str = "meta-llama/Llama-3.2-3B") -> ConfigContainer:
    """Full SFT of Llama 3.2 3B on 1 GPU."""
    return _llama(hf_path)


def llama32_3b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Llama-3.2-3B") -> ConfigContainer:
    """LoRA (dim 32, alpha 32) of Llama 3.2 3B on 1 GPU."""
    return _llama(hf_path, peft_scheme)


def llama3_8b_sft(hf_path: str = "meta-llama/Meta-Llama-3-8B") -> ConfigContainer:
    """Full SFT of Llama 3 8B on 2 GPUs (TP2)."""
    return _llama(hf_path, tp=2)


def llama3_8b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Meta-Llama-3-8B") -> ConfigContainer:
    """LoRA (dim 8, alpha 16) of Llama 3 8B on 1 GPU."""
    return _llama(hf_path, peft_scheme, peft_fields={"dim": 8, "alpha": 16})


def llama31_8b_sft(hf_path: str = "meta-llama/Meta-Llama-3.1-8B") -> ConfigContainer:
    """Full SFT of Llama 3.1 8B on 2 GPUs (TP2)."""
    return _llama(hf_path, tp=2)


def llama31_8b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Meta-Llama-3.1-8B") -> ConfigContainer:
    """LoRA (dim 8, alpha 16) of Llama 3.1 8B on 1 GPU."""
    return _llama(hf_path, peft_scheme, peft_fields={"dim": 8, "alpha": 16})


def llama3_70b_sft(hf_path: str = "meta-llama/Meta-Llama-3-70B") -> ConfigContainer:
    """Full SFT of Llama 3 70B on 32 GPUs (TP8 x PP4)."""
    return _llama(hf_path, tp=8, pp=4)


def llama3_70b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Meta-Llama-3-70B") -> ConfigContainer:
    """LoRA (dim 16, alpha 32) of Llama 3 70B on 8 GPUs (TP8)."""
    return _llama(hf_path, peft_scheme, tp=8, peft_fields={"dim": 16, "alpha": 32})


def llama31_70b_sft(hf_path: str = "meta-llama/Meta-Llama-3.1-70B") -> ConfigContainer:
    """Full SFT of Llama 3.1 70B on 32 GPUs (TP8 x PP4)."""
    return _llama(hf_path, tp=8, pp=4)


def llama31_70b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Meta-Llama-3.1-70B") -> ConfigContainer:
    """LoRA (dim 16, alpha 32) of Llama 3.1 70B on 8 GPUs (TP8)."""
    return _llama(hf_path, peft_scheme, tp=8, peft_fields={"dim": 16, "alpha": 32})


def llama31_405b_sft(hf_path: str = "meta-llama/Meta-Llama-3.1-405B") -> ConfigContainer:
    """Full SFT of Llama 3.1 405B on 128 GPUs (TP8 x PP16, SP), seq 2048, GBS 16, with comm overlap."""
    cfg = _llama(hf_path, seq_length=2048, tp=8, pp=16, sp=True, global_batch_size=16)
    cfg.model.account_for_embedding_in_pipeline_split = cfg.model.account_for_loss_in_pipeline_split = True
    cfg.mixed_precision = get_mixed_precision_config("bf16_mixed")
    cfg.mixed_precision.grad_reduce_in_fp32 = False
    cfg.ddp.overlap_grad_reduce = cfg.ddp.overlap_param_gather = cfg.ddp.average_in_collective = True
    cfg.comm_overlap = CommOverlapConfig(tp_comm_overlap=True)
    return cfg


def llama31_405b_peft(peft_scheme: Any = "lora", hf_path: str = "meta-llama/Meta-Llama-3.1-405B") -> ConfigContainer:
    """LoRA (dim 16, alpha 32, linear_qkv only) of Llama 3.1 405B on 32 GPUs (TP4 x PP8, VPP8, SP), seq 2048, GBS 32."""
    return _llama(hf_path, peft_scheme, seq_length=2048, tp=4, pp=8, vpp=8, sp=True, global_batch_size=32,
                  peft_fields={"dim": 16, "alpha": 32, "target_modules": ["linear_qkv"]})


RECIPES = {fn.__name__: fn for fn in (
    llama32_1b_sft, llama32_1b_peft, llama32_3b_sft, llama32_3b_peft, llama3_8b_sft, llama3_8b_peft, llama31_8b_sft,
    llama31_8b_peft, llama3_70b_sft, llama3_70b_peft, llama31_70b_sft, llama31_70b_peft, llama31_405b_sft,
    llama31_405b_peft)}
# GPU counts in Bridge v0.6's names (llama3_8b_sft_2gpu_h100_bf16_config, ...).
_V06_GPUS = {"llama32_1b_sft": 1, "llama32_3b_sft": 1, "llama3_8b_sft": 2, "llama31_8b_sft": 2, "llama3_70b_sft": 32,
             "llama31_70b_sft": 32, "llama31_405b_sft": 128, "llama32_1b_peft": 1, "llama32_3b_peft": 1,
             "llama3_8b_peft": 1, "llama31_8b_peft": 1, "llama3_70b_peft": 8, "llama31_70b_peft": 8,
             "llama31_405b_peft": 32}
ALIASES = bridge_aliases(RECIPES, _V06_GPUS)
globals().update(ALIASES)  # llama3_8b_sft_config, llama3_8b_finetune_config, ... importable from this module
__all__ = [*RECIPES, *ALIASES]
