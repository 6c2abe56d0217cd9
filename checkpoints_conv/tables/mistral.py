"""Mistral (``MistralForCausalLM``): the same tensor names and layouts as Llama.

Mistral differs from Llama only in config (sliding window, rope theta), which the provider carries; its
weights map row for row like Llama's.
"""

from checkpoints_conv.mapping import Table
from checkpoints_conv.tables.llama import EMBEDDING, FINAL_NORM, OUTPUT_LAYER, layer_rows

TABLE = Table(
    name="mistral",
    architectures=("MistralForCausalLM",),
    rows=(EMBEDDING, *layer_rows(), FINAL_NORM, OUTPUT_LAYER),
)
