"""A ~3M-parameter Llama-architecture model that finetunes on 2 CPU cores in seconds (demo and tests).

``tiny_llama_sft()`` trains all weights, ``tiny_llama_peft()`` LoRA adapters, on the demo chat dataset shipped
in ``sft_bridge_port/data/demo/`` (packed to 256 tokens, assistant-only loss, a validation split). fp32 on CPU,
bf16 mixed precision when a GPU is present. With no ``hf_path`` the architecture is ``TINY_LLAMA_ARCH``
(random weights unless ``checkpoint.pretrained_checkpoint`` is set); the demo builds an HF folder with this
architecture and a trained tokenizer, imports it, and passes that folder as ``hf_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

import sft_bridge_port.data
from sft_bridge_port.config import ConfigContainer
from sft_bridge_port.data.config import FinetuningDatasetConfig, PackedSequenceSpecs
from sft_bridge_port.models import get_provider, provider_from_hf_config

from recipes.common import _peft_common, _sft_common, default_peft, run_dirs

# config.json values of the tiny model (vocab 512 = the demo tokenizer's size).
TINY_LLAMA_ARCH: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 256,
    "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
    "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "float32",
}
DEMO_DATA_DIR = Path(sft_bridge_port.data.__file__).parent / "demo"
SEQ_LENGTH = 256


def _tiny(hf_path: Optional[str], peft_scheme: Any = None) -> ConfigContainer:
    """Template + tiny-model deltas: short run, high LR, small batches, local demo data, no fused kernels."""
    cfg = _sft_common() if peft_scheme is None else _peft_common()
    overrides = dict(seq_length=SEQ_LENGTH, cross_entropy_loss_fusion=False, params_dtype=torch.float32,
                     bf16=False, fp16=False)
    cfg.model = get_provider(hf_path, **overrides) if hf_path else provider_from_hf_config(TINY_LLAMA_ARCH, **overrides)
    cfg.tokenizer.tokenizer_model = str(hf_path) if hf_path else None
    cfg.dataset = FinetuningDatasetConfig(
        dataset_root=str(DEMO_DATA_DIR), seq_length=SEQ_LENGTH, seed=5678, num_workers=0, do_test=False,
        packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=SEQ_LENGTH), persistent_workers=False,
        pin_memory=False)
    cfg.train.train_iters, cfg.train.global_batch_size = 30, 4
    cfg.validation.eval_interval, cfg.validation.eval_iters = 10, 2
    cfg.optimizer.lr, cfg.optimizer.min_lr = (3e-3 if peft_scheme else 1e-3), 1e-4
    cfg.optimizer.use_distributed_optimizer = False
    cfg.scheduler.lr_warmup_iters = 3
    cfg.checkpoint.save_interval = 30
    cfg.checkpoint.save = cfg.checkpoint.load = run_dirs(name="tiny_llama")[0]
    cfg.logger.tensorboard_dir = None
    cfg.mixed_precision = "bf16_mixed" if torch.cuda.is_available() else None
    if cfg.mixed_precision is None:  # fp32 weights need megatron's fp32 optimizer (its bf16 one cannot checkpoint them)
        cfg.optimizer.bf16 = cfg.optimizer.fp16 = False
    if peft_scheme is not None:
        cfg.peft = default_peft(peft_scheme, dim=8, alpha=16)
    return cfg


def tiny_llama_sft(hf_path: Optional[str] = None) -> ConfigContainer:
    """Full SFT of the tiny Llama on the demo chat data: 30 steps, GBS 4, on a CPU in seconds."""
    return _tiny(hf_path)


def tiny_llama_peft(peft_scheme: Any = "lora", hf_path: Optional[str] = None) -> ConfigContainer:
    """LoRA (dim 8, alpha 16) of the tiny Llama on the demo chat data, on a CPU in seconds.

    Like every PEFT recipe it needs ``checkpoint.pretrained_checkpoint`` (the base weights; an HF folder works).
    """
    return _tiny(hf_path, peft_scheme)


RECIPES = {fn.__name__: fn for fn in (tiny_llama_sft, tiny_llama_peft)}
ALIASES: dict[str, Any] = {}
__all__ = [*RECIPES, "TINY_LLAMA_ARCH", "DEMO_DATA_DIR"]
