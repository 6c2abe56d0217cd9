"""The exported HF PEFT adapter, loaded by ``peft`` on the HF base model, reproduces our adapted logits."""

import json

import pytest
import torch

from checkpoints_conv.peft_export import export_hf_adapter
from sft_bridge_port.peft import CanonicalLoRA, DoRA, LoRA
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.peft.helpers import batch, copy_hf_into_megatron, hf_model, logits, megatron_model, randomize_adapters

CONFIGS = {
    "lora": (lambda: LoRA(dim=4, alpha=8), False),
    "dora": (lambda: DoRA(dim=4), True),
    "canonical": (lambda: CanonicalLoRA(dim=4, alpha=8, target_modules=["linear_q", "linear_v", "linear_fc1_up", "linear_fc2"]), False),
}


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


@pytest.mark.parametrize("scheme", sorted(CONFIGS))
def test_exported_adapter_gives_the_same_logits_in_hf_peft(tmp_path, scheme):
    from peft import PeftModel

    make, use_dora = CONFIGS[scheme]
    hf = hf_model(seed=0)
    tokens, pos = batch()
    with parallel_context(seed=1):
        model = megatron_model()
        copy_hf_into_megatron(hf, model)
        peft = make()
        with torch.no_grad():
            base_ours = logits(model, tokens, pos)
            base_hf = hf(input_ids=tokens).logits
            torch.testing.assert_close(base_ours, base_hf, rtol=1e-4, atol=1e-4)  # same base weights
            peft([model], training=False)
            randomize_adapters(model)
            ours = logits(model, tokens, pos)
            export_hf_adapter([model], peft, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["use_dora"]) == (4, peft.alpha, use_dora)
    peft_model = PeftModel.from_pretrained(hf, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = peft_model(input_ids=tokens).logits
    assert _cosine(ours, base_ours) < 0.99, "adapters too weak for the comparison to mean anything"
    assert _cosine(ours, theirs) >= 0.9999
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_target_modules_use_short_names_when_every_layer_is_adapted(tmp_path):
    with parallel_context(seed=1):
        model = megatron_model()
        peft = LoRA(dim=2, target_modules=["linear_qkv", "*.layers.1.*.linear_fc2"])
        peft([model])
        export_hf_adapter([model], peft, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == [
        "model.layers.0.self_attn.k_proj", "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
        "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]  # fmt: skip
    with parallel_context(seed=1):
        model = megatron_model()
        peft = LoRA(dim=2)
        peft([model])
        export_hf_adapter([model], peft, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
