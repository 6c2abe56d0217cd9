"""Qwen3 (``Qwen3ForCausalLM``): Llama's names plus per-head RMSNorm on queries and keys (QK-norm).

``self_attn.q_norm`` / ``k_norm`` (shape ``[head_dim]``) map to megatron's ``q_layernorm`` / ``k_layernorm``
and are replicated over TP ranks. Qwen3 has no q/k/v bias.
"""

from checkpoints_conv.mapping import Table
from checkpoints_conv.tables.llama import EMBEDDING, FINAL_NORM, OUTPUT_LAYER, layer_rows

TABLE = Table(
    name="qwen3",
    architectures=("Qwen3ForCausalLM",),
    rows=(EMBEDDING, *layer_rows(qk_norm=True), FINAL_NORM, OUTPUT_LAYER),
)
