"""GPTModelProvider: Bridge-style deferred validation, vocab padding, wrapping order; HF config table."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from megatron.core.distributed import DistributedDataParallel
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.module import Float16Module
from transformers import AutoConfig

from sft_bridge_port.models import (
    GPTModelProvider,
    flash_cute,
    get_provider,
    hf_config_from_provider,
    provider_from_hf_config,
    quack_ce,
    quack_mlp,
    quack_norm,
    supported_architectures,
)
from sft_bridge_port.models.layer_spec import TorchNorm, fast_block_spec
from sft_bridge_port.models.tiny import FAMILIES, tiny_hf_config
from sft_bridge_port.utils.dist_context import parallel_context


@pytest.mark.parametrize(
    "field, required, others, module, installed, hint",
    [
        ("attention_kernel", "fa4", ("auto", "fa2"), flash_cute, "cute_installed", "pip install flash-attn-4"),
        ("norm_kernel", "quack", ("auto", "torch"), quack_norm, "quack_installed", "pip install quack-kernels"),
        ("mlp_kernel", "quack", ("auto", "torch"), quack_mlp, "quack_installed", "pip install quack-kernels"),
        ("ce_kernel", "quack", ("auto", "torch"), quack_ce, "quack_installed", "pip install quack-kernels"),
    ],
)
def test_kernel_fields_refuse_unknown_names_and_required_kernels_without_their_package(
    monkeypatch, field, required, others, module, installed, hint
):
    def provider(kernel: str) -> GPTModelProvider:
        return GPTModelProvider(num_layers=1, hidden_size=64, num_attention_heads=4, vocab_size=128, **{field: kernel})

    choices = repr(("auto", required, others[1]))  # the order of the module's KERNELS
    with pytest.raises(ValueError, match=rf"{field} must be one of {re.escape(choices)}, got 'nope'"):
        provider("nope").finalize()
    monkeypatch.setattr(module, installed, lambda: False)
    with pytest.raises(ValueError, match=rf"{field}={required!r} needs a package.*{hint}.*{field}='auto'"):
        provider(required).finalize()
    for kernel in others:  # "auto" without the package falls back; the other choice never needs it
        provider(kernel).finalize()


def test_validation_is_deferred_to_finalize():
    provider = GPTModelProvider(
        num_layers=2, hidden_size=64, num_attention_heads=4, tensor_model_parallel_size=3, vocab_size=99
    )  # invalid (4 heads over TP=3), yet constructing it does not raise
    provider.seq_length = 64  # mutable before finalize, like Bridge
    with pytest.raises(ValueError, match="num_attention_heads"):
        provider.finalize()
    provider.tensor_model_parallel_size = 1
    provider.finalize()
    assert provider.kv_channels == 16 and provider.ffn_hidden_size == 256


def test_padded_vocab_size():
    provider = GPTModelProvider(vocab_size=1000, should_pad_vocab=True)
    assert provider.padded_vocab_size() == 1024
    provider.tensor_model_parallel_size = 4
    assert provider.padded_vocab_size() == 1024  # multiple of 128 * 4 = 512
    assert GPTModelProvider(vocab_size=1000).padded_vocab_size() == 1000  # Bridge default: no padding


def test_fields_stay_plain_data():
    provider = get_provider("meta-llama/Llama-3.2-1B")
    assert provider.transformer_layer_spec is fast_block_spec  # a function reference, resolved in provide()
    values = dataclasses.asdict(provider)
    assert values["rope_scaling_factor"] == 32.0 and values["params_dtype"] is torch.bfloat16


@pytest.mark.parametrize("family", FAMILIES)
def test_provider_fields_equal_hf_config_and_round_trip(family):
    hf = tiny_hf_config(family)
    provider = provider_from_hf_config(hf)
    assert (provider.num_layers, provider.hidden_size, provider.ffn_hidden_size) == (
        hf.num_hidden_layers, hf.hidden_size, hf.intermediate_size)
    assert (provider.num_attention_heads, provider.num_query_groups) == (hf.num_attention_heads, hf.num_key_value_heads)
    assert provider.kv_channels == getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    assert provider.layernorm_epsilon == hf.rms_norm_eps and provider.rotary_base == hf.rope_parameters["rope_theta"]
    assert provider.share_embeddings_and_output_weights == hf.tie_word_embeddings
    assert provider.add_qkv_bias == (family == "qwen2") and provider.qk_layernorm == (family == "qwen3")
    assert provider.window_size == ((4095, 0) if family == "mistral" else None)
    assert provider.rope_scaling == family.startswith("llama")
    exported = hf_config_from_provider(provider)
    again = AutoConfig.for_model(exported.pop("model_type"), **exported)
    assert provider_from_hf_config(again) == provider


def test_builtin_public_ids_offline():
    one_b = get_provider("meta-llama/Llama-3.2-1B")
    assert (one_b.num_layers, one_b.hidden_size, one_b.kv_channels, one_b.rope_scaling_factor) == (16, 2048, 64, 32.0)
    assert one_b.share_embeddings_and_output_weights and one_b.hf_architecture == "LlamaForCausalLM"
    assert get_provider("meta-llama/Meta-Llama-3.1-8B").num_layers == get_provider("meta-llama/Llama-3.1-8B").num_layers
    assert get_provider("Qwen/Qwen3-8B").qk_layernorm and get_provider("Qwen/Qwen2.5-7B").add_qkv_bias
    assert get_provider("mistralai/Mistral-7B-v0.1").window_size == (4095, 0)
    assert get_provider("Qwen/Qwen2.5-0.5B", seq_length=2048).seq_length == 2048


def test_clear_errors():
    with pytest.raises(ValueError, match="supported"):
        provider_from_hf_config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(ValueError, match="not a local folder"):
        get_provider("no-such-org/no-such-model")
    with pytest.raises(ValueError, match="use_sliding_window"):
        provider_from_hf_config(tiny_hf_config("qwen2", use_sliding_window=True, sliding_window=16))
    assert supported_architectures() == sorted(
        ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"])


def test_distributed_model_wrapping_order_and_sequence_parallel_norm():
    provider = provider_from_hf_config(tiny_hf_config("llama"), use_cpu_initialization=True)
    seen = []

    def pre_wrap(chunks):
        seen.extend(type(c) for c in chunks)
        return chunks

    with parallel_context():
        chunks = provider.provide_distributed_model(bf16=True, pre_wrap_hook=pre_wrap)
    assert seen == [GPTModel]
    assert isinstance(chunks[0], DistributedDataParallel) and isinstance(chunks[0].module, Float16Module)
    provider.sequence_parallel = True
    norm = TorchNorm(provider, hidden_size=8)
    assert all(getattr(p, "sequence_parallel", False) for p in norm.parameters())


@pytest.mark.parametrize("model_id", ["meta-llama/Llama-3.2-1B", "Qwen/Qwen3-8B", "Qwen/Qwen2.5-7B", "mistralai/Mistral-7B-v0.1"])
def test_builtin_providers_train_without_dropout(model_id):
    # megatron's TransformerConfig defaults both dropouts to 0.1; HF's families use 0.0 (and the 0.1 default also
    # pushed packed attention off the fused varlen kernel onto a per-document loop).
    provider = get_provider(model_id)
    assert provider.attention_dropout == 0.0 and provider.hidden_dropout == 0.0
