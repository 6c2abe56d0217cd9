"""HF -> Megatron (torch_dist) -> HF through real checkpoints: bit-exact, Bridge's layout, loadable by transformers."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from checkpoints_conv import AutoBridge, export_megatron_to_hf, import_hf_to_megatron, verify
from checkpoints_conv.exporter import stored_embedding
from sft_bridge_port.utils import ckpt_layout
from tests.unit.conversion.conftest import FAMILIES, assert_same_state, hf_state, make_hf_model, save_tiny_tokenizer


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_megatron_hf_is_bit_exact_and_loads_in_transformers(hf_models, tmp_path, family):
    from transformers import AutoModelForCausalLM

    src = hf_models[family]
    ckpt = import_hf_to_megatron(src, tmp_path / "mg", tp=2, show_progress=False)
    out = export_megatron_to_hf(ckpt, tmp_path / "hf", show_progress=False)
    assert_same_state(hf_state(src), hf_state(out))
    tokens = torch.randint(0, 90, (1, 12), generator=torch.Generator().manual_seed(1))
    a = AutoModelForCausalLM.from_pretrained(src)(input_ids=tokens).logits
    b = AutoModelForCausalLM.from_pretrained(out)(input_ids=tokens).logits
    assert torch.equal(a, b)


def test_bf16_stays_bf16_and_fp32_on_request(tmp_path):
    src = make_hf_model(tmp_path / "src", "qwen3", dtype=torch.bfloat16)
    import_hf_to_megatron(src, tmp_path / "mg", show_progress=False)
    assert stored_embedding(tmp_path / "mg/iter_0000000")[1] == torch.bfloat16
    out = export_megatron_to_hf(tmp_path / "mg", tmp_path / "hf", show_progress=False)
    assert_same_state(hf_state(src), hf_state(out))
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    import_hf_to_megatron(src, tmp_path / "mg32", dtype="fp32", show_progress=False)
    assert stored_embedding(tmp_path / "mg32/iter_0000000")[1] == torch.float32


def test_checkpoint_layout_and_provider(tmp_path):
    src = make_hf_model(tmp_path / "src", "llama_tied")
    save_tiny_tokenizer(src)
    root = import_hf_to_megatron(src, tmp_path / "ckpt", tp=2, pp=2, show_progress=False)
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    it = root / "iter_0000000"
    expected = ckpt_layout.dist_checkpoint_files() | {"run_config.yaml", "tokenizer"}
    assert expected <= {p.name for p in it.iterdir()}
    assert (it / "tokenizer" / "tokenizer.json").is_file() and (it / "tokenizer" / "tokenizer_config.json").is_file()
    model = yaml.safe_load((it / "run_config.yaml").read_text())["model"]
    assert model["_target_"] == "sft_bridge_port.models.provider.GPTModelProvider"
    assert (model["tensor_model_parallel_size"], model["pipeline_model_parallel_size"]) == (2, 2)
    assert model["share_embeddings_and_output_weights"] is True and model["vocab_size"] == 97
    # vocab padded for TP 2: 97 -> a multiple of 128 * 2
    assert stored_embedding(it)[0] == 256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "src"]  # no temp folder left behind
    bridge = AutoBridge.from_hf_pretrained(src)
    out = bridge.export_ckpt(root, tmp_path / "hf", show_progress=False)
    assert (out / "tokenizer.json").is_file()
    assert json.loads((out / "config.json").read_text()) == json.loads((src / "config.json").read_text())


def test_sharded_export_with_index_loads_in_transformers(hf_models, tmp_path):
    from transformers import AutoModelForCausalLM

    src = hf_models["qwen2"]
    import_hf_to_megatron(src, tmp_path / "mg", show_progress=False)
    out = export_megatron_to_hf(tmp_path / "mg", tmp_path / "hf", max_shard_bytes=40_000, show_progress=False)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert not (out / "model.safetensors").exists()
    assert_same_state(hf_state(src), hf_state(out))
    model = AutoModelForCausalLM.from_pretrained(out)
    assert torch.equal(model.model.embed_tokens.weight, hf_state(src)["model.embed_tokens.weight"])


@pytest.mark.parametrize("family", ["llama_tied", "qwen2", "qwen3"])
def test_megatron_forward_matches_hf(hf_models, tmp_path, family):
    src = hf_models[family]
    import_hf_to_megatron(src, tmp_path / "mg", show_progress=False)
    result = verify(src, tmp_path / "mg")
    assert result.ok, str(result)
    assert result.min_cosine >= 0.9999 and result.greedy_agreement == 1.0 and result.num_tokens == 24


def test_verify_catches_a_different_model(hf_models, tmp_path):
    other = make_hf_model(tmp_path / "other", "llama", seed=7)
    import_hf_to_megatron(other, tmp_path / "mg", show_progress=False)
    result = verify(hf_models["llama"], tmp_path / "mg")
    assert not result.ok and result.min_cosine < 0.9
