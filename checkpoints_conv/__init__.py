"""HF <-> Megatron checkpoint conversion: a mapping table per architecture, one engine, AutoBridge on top.

    from checkpoints_conv import AutoBridge, import_hf_to_megatron, export_megatron_to_hf, verify
    import_hf_to_megatron("/models/Llama-3.2-1B", "./ckpt/llama32_1b", tp=2)
    export_megatron_to_hf("./runs/sft/checkpoints", "./exports/llama32_1b_sft")
    print(verify("/models/Llama-3.2-1B", "./ckpt/llama32_1b"))
"""

from checkpoints_conv.auto_bridge import AutoBridge, load_megatron_model
from checkpoints_conv.exporter import export_megatron_to_hf, save_hf_pretrained
from checkpoints_conv.importer import import_hf_to_megatron, load_hf_weights_into_model
from checkpoints_conv.tables import supported_architectures
from checkpoints_conv.verify import VerifyResult, verify

__all__ = [
    "AutoBridge",
    "VerifyResult",
    "export_megatron_to_hf",
    "import_hf_to_megatron",
    "load_hf_weights_into_model",
    "load_megatron_model",
    "save_hf_pretrained",
    "supported_architectures",
    "verify",
]
