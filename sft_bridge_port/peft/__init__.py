"""Parameter-efficient finetuning on megatron-core models with Megatron-Bridge's PEFT interface.

``LoRA``, ``DoRA`` and ``CanonicalLoRA`` are config dataclasses (they go into ``ConfigContainer.peft`` and
``run_config.yaml``) that, called on the model chunks, attach adapters and freeze the base weights.
Checkpoint helpers save/load only the adapters; ``merge_adapters`` folds them into the base weights. Writing an
HF PEFT adapter folder needs the conversion tables, so it lives above this package, in
``checkpoints_conv.peft_export`` (``python -m checkpoints_conv merge|export-adapter``).
"""

from sft_bridge_port.peft.base import PEFT, adapter_key_filter, iter_adapted
from sft_bridge_port.peft.canonical_lora import CanonicalLoRA
from sft_bridge_port.peft.checkpoint import (
    adapter_sharded_state_dict,
    adapter_state_filter,
    apply_peft_for_training,
    load_adapter_weights,
    save_adapter_weights,
    trainable_parameters,
)
from sft_bridge_port.peft.dora import DoRA
from sft_bridge_port.peft.lora import LoRA
from sft_bridge_port.peft.merge import merge_adapter_checkpoint, merge_adapters
from sft_bridge_port.peft.module_matcher import ModuleMatcher, wildcard_match
from sft_bridge_port.peft.schemes import default_peft_config

__all__ = [
    "PEFT", "LoRA", "DoRA", "CanonicalLoRA", "ModuleMatcher", "default_peft_config", "wildcard_match",
    "adapter_key_filter", "adapter_state_filter", "adapter_sharded_state_dict", "save_adapter_weights",
    "load_adapter_weights", "apply_peft_for_training", "trainable_parameters", "iter_adapted",
    "merge_adapters", "merge_adapter_checkpoint",
]  # fmt: skip
