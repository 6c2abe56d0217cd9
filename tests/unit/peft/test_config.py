"""PEFT configs: Bridge's defaults, validation, target matching, scheme lookup and YAML round trip."""

import pytest
import torch

from sft_bridge_port.peft import CanonicalLoRA, DoRA, LoRA, ModuleMatcher, default_peft_config, wildcard_match


def test_bridge_defaults():
    lora, dora = LoRA(), DoRA()
    assert lora.target_modules == ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    assert (lora.dim, lora.alpha, lora.dropout, lora.dropout_position) == (32, 32, 0.0, "pre")
    assert (lora.lora_A_init_method, lora.lora_B_init_method, lora.lora_dtype) == ("xavier", "zero", None)
    assert lora.exclude_modules == [] and lora.a2a_experimental is False
    assert (dora.dim, dora.alpha, dora.target_modules) == (32, 64, lora.target_modules)
    assert CanonicalLoRA().target_modules == [
        "linear_q", "linear_k", "linear_v", "linear_proj", "linear_fc1_up", "linear_fc1_gate", "linear_fc2",
    ]  # fmt: skip


def test_wildcards_match_whole_dotted_names():
    name = "decoder.layers.0.self_attention.linear_qkv"
    assert wildcard_match("*.layers.0.*.linear_qkv", name)
    assert not wildcard_match("*.layers.0.*.linear_qkv", "decoder.layers.10.self_attention.linear_qkv")
    assert not wildcard_match("linear_qkv", name)  # no '*': plain names match the module's own name only
    matcher = ModuleMatcher(target_modules=["linear_proj", "*.layers.1.*.linear_qkv"])
    assert matcher.matched_targets(None, "linear_proj", "decoder.layers.3.self_attention.linear_proj") == ["linear_proj"]
    assert matcher.match(None, "linear_qkv", name) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=0), "peft.dim"),
        (dict(dropout=1.5), "peft.dropout"),
        (dict(dropout_position="middle"), "dropout_position"),
        (dict(lora_A_init_method="orthogonal"), "lora_A_init_method"),
        (dict(exclude_modules=["linear_fc2"]), "exclude_modules"),
        (dict(target_modules="linear_qkv"), "list of strings"),
        (dict(a2a_experimental=True), "a2a_experimental"),
        (dict(lora_dtype="int8"), "lora_dtype"),
    ],
)
def test_bad_fields_raise_naming_the_field(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        LoRA(**kwargs)


def test_canonical_rejects_fused_targets():
    with pytest.raises(ValueError, match="linear_qkv"):
        CanonicalLoRA(target_modules=["linear_qkv"])


def test_lora_dtype_accepts_short_names():
    assert LoRA(lora_dtype="bf16").lora_dtype is torch.bfloat16


def test_default_peft_config():
    assert default_peft_config("lora") == LoRA()
    assert default_peft_config("DoRA", dim=8) == DoRA(dim=8)
    assert default_peft_config("none") is None and default_peft_config(None) is None
    custom = LoRA(dim=4)
    assert default_peft_config(custom) is custom
    with pytest.raises(ValueError, match=r"\['dora', 'lora', 'none'\]"):
        default_peft_config("qlora")


@pytest.mark.parametrize("cfg", [LoRA(dim=8, lora_dtype=torch.bfloat16), DoRA(target_modules=["*.layers.0.*.linear_qkv"]), CanonicalLoRA()])
def test_yaml_round_trip(cfg):
    serialization = pytest.importorskip("sft_bridge_port.config.serialization")
    data = serialization.to_dict(cfg, strict=True)
    assert data["_target_"] == f"{type(cfg).__module__}.{type(cfg).__name__}"
    assert serialization.from_dict(serialization.yaml_to_dict(serialization.to_yaml(cfg))) == cfg
