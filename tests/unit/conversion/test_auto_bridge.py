"""The AutoBridge surface Bridge users call, end to end on a tiny model."""

from __future__ import annotations

import pytest
import torch

from checkpoints_conv import AutoBridge
from tests.unit.conversion.conftest import assert_same_state, hf_state


def test_supported_models_agree_with_the_providers():
    from sft_bridge_port.models import supported_architectures

    assert AutoBridge.list_supported_models() == supported_architectures()
    assert AutoBridge.supports({"architectures": ["Qwen3ForCausalLM"]})
    assert not AutoBridge.supports({"architectures": ["GPT2LMHeadModel"]})


def test_provider_import_load_and_save_hf_pretrained(hf_models, tmp_path):
    from sft_bridge_port.utils.dist_context import parallel_context

    src = hf_models["qwen3"]
    bridge = AutoBridge.from_hf_pretrained(src)
    provider = bridge.to_megatron_provider(load_weights=False)
    assert (provider.num_layers, provider.qk_layernorm, provider.hf_architecture) == (2, True, "Qwen3ForCausalLM")
    with pytest.raises(ValueError, match="to_megatron_model"):
        bridge.to_megatron_provider(load_weights=True)
    AutoBridge.import_ckpt(src, tmp_path / "mg", show_progress=False)
    with parallel_context(1, 1):
        (model,) = bridge.load_megatron_model(tmp_path / "mg")
        out = bridge.save_hf_pretrained(model, tmp_path / "hf")
        (direct,) = bridge.to_megatron_model(wrap_with_ddp=False, use_cpu_initialization=True)
        for (name, a), (_, b) in zip(model.named_parameters(), direct.named_parameters()):
            assert torch.equal(a, b), name
    assert_same_state(hf_state(src), hf_state(out))
