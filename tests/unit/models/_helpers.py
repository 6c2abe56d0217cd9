"""Test helpers: build the HF and megatron twins of a tiny model and copy HF weights into megatron.

The copy is a deliberately small inline mapping (the real tables live in checkpoints_conv): q/k/v are
interleaved per query group into ``linear_qkv``, gate and up are stacked into ``linear_fc1``.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from sft_bridge_port.models import get_provider


def interleave_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: int) -> torch.Tensor:
    """[q_g0; k_g0; v_g0; q_g1; ...] along dim 0 (works for weights [rows, h] and biases [rows])."""
    tail = q.shape[1:]
    q = q.reshape(groups, -1, *tail)
    k = k.reshape(groups, -1, *tail)
    v = v.reshape(groups, -1, *tail)
    return torch.cat([q, k, v], dim=1).reshape(-1, *tail)


def hf_to_mcore_state(
    hf_sd: dict[str, torch.Tensor], groups: int, num_layers: int, padded_vocab: int, tied: bool
) -> dict:
    out = {}

    def pad(w):
        return torch.cat([w, w.new_zeros(padded_vocab - w.shape[0], *w.shape[1:])]) if w.shape[0] < padded_vocab else w

    out["embedding.word_embeddings.weight"] = pad(hf_sd["model.embed_tokens.weight"])
    out["decoder.final_layernorm.weight"] = hf_sd["model.norm.weight"]
    if not tied:
        out["output_layer.weight"] = pad(hf_sd["lm_head.weight"])
    for i in range(num_layers):
        h, m = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = h + "self_attn."
        out[m + "input_layernorm.weight"] = hf_sd[h + "input_layernorm.weight"]
        out[m + "pre_mlp_layernorm.weight"] = hf_sd[h + "post_attention_layernorm.weight"]
        for kind in ("weight", "bias"):
            if att + f"q_proj.{kind}" in hf_sd:
                out[m + f"self_attention.linear_qkv.{kind}"] = interleave_qkv(
                    *(hf_sd[att + f"{p}_proj.{kind}"] for p in "qkv"), groups
                )
        out[m + "self_attention.linear_proj.weight"] = hf_sd[att + "o_proj.weight"]
        if att + "q_norm.weight" in hf_sd:
            out[m + "self_attention.q_layernorm.weight"] = hf_sd[att + "q_norm.weight"]
            out[m + "self_attention.k_layernorm.weight"] = hf_sd[att + "k_norm.weight"]
        out[m + "mlp.linear_fc1.weight"] = torch.cat(
            [hf_sd[h + "mlp.gate_proj.weight"], hf_sd[h + "mlp.up_proj.weight"]]
        )
        out[m + "mlp.linear_fc2.weight"] = hf_sd[h + "mlp.down_proj.weight"]
    return out


def build_twins(hf_dir, **provider_overrides):
    """(hf_model, mcore GPTModel with HF weights, provider); call inside parallel_context()."""
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    provider = get_provider(hf_dir, **{"use_cpu_initialization": True, **provider_overrides})
    model = provider.provide_distributed_model(wrap_with_ddp=False)[0].eval()
    state = hf_to_mcore_state(
        hf.state_dict(), provider.num_query_groups, provider.num_layers, provider.padded_vocab_size(),
        provider.share_embeddings_and_output_weights,
    )
    target = model.module if hasattr(model, "module") else model  # Float16Module wraps the GPTModel
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    assert not missing and not unexpected, (missing, unexpected)
    return hf, model, provider


def quack_runs_here() -> bool:
    """Whether quack's kernels can run in this process (quack-kernels installed, a Hopper/Blackwell GPU)."""
    from sft_bridge_port.models.flash_cute import cute_arch
    from sft_bridge_port.models.quack_norm import quack_installed

    return torch.cuda.is_available() and quack_installed() and cute_arch(torch.zeros(1, device="cuda")) is not None
