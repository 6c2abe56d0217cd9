"""Model side: providers (HF config -> megatron-core GPTModel) and the fast PyTorch layer spec."""

from sft_bridge_port.models.families import (
    get_provider,
    hf_config_from_provider,
    load_hf_config,
    provider_from_hf_config,
    supported_architectures,
)
from sft_bridge_port.models.layer_spec import fast_block_spec, get_fast_layer_spec, local_block_spec
from sft_bridge_port.models.provider import GPTModelProvider

__all__ = [
    "GPTModelProvider",
    "fast_block_spec",
    "get_fast_layer_spec",
    "get_provider",
    "hf_config_from_provider",
    "load_hf_config",
    "local_block_spec",
    "provider_from_hf_config",
    "supported_architectures",
]
