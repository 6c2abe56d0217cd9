"""Llama 3 / 3.1 / 3.2 (``LlamaForCausalLM``): HF names <-> megatron-core local-spec names.

Llama 3.2 1B/3B tie the output layer to the embedding: the ``output_layer`` row is then absent on both sides
(``when="untied"``). Qwen2, Qwen3 and Mistral use the same attention/MLP names, so ``layer_rows`` builds the
per-layer rows for them too, adding the q/k/v bias (Qwen2) or QK-norm (Qwen3) rows in HF file order.
"""

from checkpoints_conv.mapping import Row, Table

L = "decoder.layers.*."
H = "model.layers.*."

EMBEDDING = Row(
    "embedding.word_embeddings.weight", "model.embed_tokens.weight",
    dims=("padded_vocab_size", "hidden_size"), kind="vocab", tp_axis=0,
)
FINAL_NORM = Row("decoder.final_layernorm.weight", "model.norm.weight", dims=("hidden_size",))
OUTPUT_LAYER = Row(
    "output_layer.weight", "lm_head.weight",
    dims=("padded_vocab_size", "hidden_size"), kind="vocab", tp_axis=0, when="untied",
)
QKV_BIAS = Row(
    L + "self_attention.linear_qkv.bias",
    (H + "self_attn.q_proj.bias", H + "self_attn.k_proj.bias", H + "self_attn.v_proj.bias"),
    dims=("qkv_rows",), kind="qkv", tp_axis=0,
)
QK_NORM = (
    Row(L + "self_attention.q_layernorm.weight", H + "self_attn.q_norm.weight", dims=("head_dim",)),
    Row(L + "self_attention.k_layernorm.weight", H + "self_attn.k_norm.weight", dims=("head_dim",)),
)


def layer_rows(qkv_bias: bool = False, qk_norm: bool = False) -> tuple[Row, ...]:
    """The per-layer rows of a Llama-style decoder layer, optionally with q/k/v bias or QK-norm."""
    return (
        Row(L + "input_layernorm.weight", H + "input_layernorm.weight", dims=("hidden_size",)),
        Row(
            L + "self_attention.linear_qkv.weight",
            (H + "self_attn.q_proj.weight", H + "self_attn.k_proj.weight", H + "self_attn.v_proj.weight"),
            dims=("qkv_rows", "hidden_size"), kind="qkv", tp_axis=0,
        ),
        *((QKV_BIAS,) if qkv_bias else ()),
        *(QK_NORM if qk_norm else ()),
        Row(L + "self_attention.linear_proj.weight", H + "self_attn.o_proj.weight", dims=("hidden_size", "q_rows"), tp_axis=1),
        Row(L + "pre_mlp_layernorm.weight", H + "post_attention_layernorm.weight", dims=("hidden_size",)),
        Row(
            L + "mlp.linear_fc1.weight", (H + "mlp.gate_proj.weight", H + "mlp.up_proj.weight"),
            dims=("fc1_rows", "hidden_size"), kind="gate_up", tp_axis=0,
        ),
        Row(L + "mlp.linear_fc2.weight", H + "mlp.down_proj.weight", dims=("hidden_size", "ffn_hidden_size"), tp_axis=1),
    )


TABLE = Table(
    name="llama",
    architectures=("LlamaForCausalLM",),
    rows=(EMBEDDING, *layer_rows(), FINAL_NORM, OUTPUT_LAYER),
)
