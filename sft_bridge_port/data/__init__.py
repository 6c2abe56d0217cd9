"""SFT data: formats -> ``Conversation`` -> tokens with exact assistant masks -> packing -> Bridge-format batches.

Public API (see docs/CONTRACTS.md "data")::

    tok = load_tokenizer("path/to/hf_model")
    cfg = FinetuningDatasetConfig(dataset_root="data/", seq_length=2048,
                                  packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=2048))
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    batch = next(its.train)   # tokens, labels, loss_mask, position_ids, cu_seqlens, ...
"""

from sft_bridge_port.data.config import (
    DataloaderConfig,
    FinetuningDatasetConfig,
    HFDatasetConfig,
    PackedSequenceSpecs,
    default_squad_config,
)
from sft_bridge_port.data.conversation import BadSampleError, Conversation, Message
from sft_bridge_port.data.hf_processors import process_squad_example
from sft_bridge_port.data.iterators import SFTDataIterators, build_sft_data_iterators
from sft_bridge_port.data.stats import DataStats
from sft_bridge_port.data.tokenizer import load_tokenizer

__all__ = [
    "BadSampleError", "Conversation", "DataStats", "DataloaderConfig", "FinetuningDatasetConfig", "HFDatasetConfig",
    "Message", "PackedSequenceSpecs", "SFTDataIterators", "build_sft_data_iterators", "default_squad_config",
    "load_tokenizer", "process_squad_example",
]
