"""A tiny Llama in both forms: an HF ``LlamaForCausalLM`` and a megatron-core GPTModel with the same weights.

The megatron model is filled from the HF state dict through the conversion table (``checkpoints_conv``), so the
tests exercise the same q/k/v interleave and [gate; up] layout that real imports produce.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
            max_position_embeddings=64)  # fmt: skip
SEQ = 16


def hf_model(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**TINY, attn_implementation="eager"))
    return model.float().eval()


def megatron_model(sequence_parallel: bool = False, recompute: bool = False, tp: int = 1, **overrides):
    """Tiny megatron GPT (sft_bridge_port's default layer spec, no TE); build inside ``parallel_context``. Logits are vocab-split over TP."""
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    from sft_bridge_port.models.layer_spec import fast_block_spec

    cfg = TransformerConfig(
        num_layers=TINY["num_hidden_layers"], hidden_size=TINY["hidden_size"],
        num_attention_heads=TINY["num_attention_heads"], num_query_groups=TINY["num_key_value_heads"],
        ffn_hidden_size=TINY["intermediate_size"], normalization="RMSNorm", layernorm_epsilon=TINY["rms_norm_eps"],
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, bias_activation_fusion=False,
        use_cpu_initialization=True, hidden_dropout=0.0, attention_dropout=0.0, tensor_model_parallel_size=tp,
        sequence_parallel=sequence_parallel,
        recompute_granularity="full" if recompute else None, recompute_method="uniform" if recompute else None,
        recompute_num_layers=1 if recompute else None,
    )  # fmt: skip
    for key, value in overrides.items():  # e.g. a wider model; set before any module reads the config
        setattr(cfg, key, value)
    spec = fast_block_spec(cfg)  # the product's default spec: SDPA attention, SP-ready norms
    return GPTModel(cfg, spec, vocab_size=TINY["vocab_size"], max_sequence_length=TINY["max_position_embeddings"],
                    position_embedding_type="rope", rotary_base=int(TINY["rope_theta"]),
                    share_embeddings_and_output_weights=False, parallel_output=True)


def copy_hf_into_megatron(hf, model) -> None:
    """Fill a TP=1 megatron model from the HF state dict through the llama conversion table."""
    from checkpoints_conv import engine
    from checkpoints_conv.mapping import shape_from_hf_config
    from checkpoints_conv.tables import get_table

    config = dict(hf.config.to_dict(), architectures=["LlamaForCausalLM"])
    shape = shape_from_hf_config(config)
    table = get_table("LlamaForCausalLM")
    hf_sd = hf.state_dict()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for row, layer in engine.plan(table, shape):
            value = engine.hf_to_mcore(row, shape, [hf_sd[n] for n in row.hf_names(layer)])
            params[row.mcore_name(layer)].copy_(value)


def batch(seed: int = 0, batch_size: int = 2):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, TINY["vocab_size"], (batch_size, SEQ), generator=g)
    return tokens, torch.arange(SEQ).expand(batch_size, SEQ)


def logits(model, tokens, position_ids):
    return model(tokens, position_ids, None)


def randomize_adapters(model, std: float = 0.3, seed: int = 1) -> None:
    """Give every adapter parameter a large random value so adapters visibly change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapter." in name:
                if name.endswith("weight_magnitude"):
                    p.mul_(1 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * std)
