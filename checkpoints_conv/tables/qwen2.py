"""Qwen2 / Qwen2.5 (``Qwen2ForCausalLM``): Llama's names plus a bias on q/k/v.

The fused ``linear_qkv.bias`` is interleaved by query group exactly like the weight. Small Qwen2.5 models
(0.5B-3B) tie the embeddings; the ``output_layer`` row then drops out.
"""

from checkpoints_conv.mapping import Table
from checkpoints_conv.tables.llama import EMBEDDING, FINAL_NORM, OUTPUT_LAYER, layer_rows

TABLE = Table(
    name="qwen2",
    architectures=("Qwen2ForCausalLM",),
    rows=(EMBEDDING, *layer_rows(qkv_bias=True), FINAL_NORM, OUTPUT_LAYER),
)
