"""Bad input gives a clear error naming the tensor/file and shapes, and leaves no output folder behind."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints_conv import export_megatron_to_hf, import_hf_to_megatron
from checkpoints_conv.cli import main
from tests.unit.conversion.conftest import make_hf_model


@pytest.fixture
def src(tmp_path):
    return make_hf_model(tmp_path / "src", "qwen2")


def _edit_weights(folder, edit):
    path = folder / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _import_fails(src, out, match, **kwargs):
    with pytest.raises(ValueError, match=match):
        import_hf_to_megatron(src, out, show_progress=False, **kwargs)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_missing_tensor(src, tmp_path):
    _edit_weights(src, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
    _import_fails(src, tmp_path / "out", r"tensor model\.layers\.1\.self_attn\.k_proj\.bias is missing from .*src")


def test_extra_tensor(src, tmp_path):
    _edit_weights(src, lambda t: t.__setitem__("model.layers.0.mlp.extra.weight", torch.zeros(2)))
    _import_fails(src, tmp_path / "out", r"not part of a qwen2 model with this config: model\.layers\.0\.mlp\.extra\.weight \(.*model\.safetensors\)")


def test_wrong_shape_names_tensor_file_and_both_shapes(src, tmp_path):
    _edit_weights(src, lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(60, 32)))
    _import_fails(
        src, tmp_path / "out",
        r"tensor model\.layers\.0\.mlp\.up_proj\.weight in .*model\.safetensors has shape \(60, 32\) but config\.json implies \(64, 32\)",
    )


def test_unsupported_architecture(src, tmp_path):
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    _import_fails(src, tmp_path / "out", "unsupported architecture 'GPT2LMHeadModel'.*Qwen2ForCausalLM")


def test_truncated_safetensors(src, tmp_path):
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    _import_fails(src, tmp_path / "out", r"model\.safetensors is not a readable safetensors file.*truncated")


def test_pickle_checkpoint_is_refused_with_the_fix(src, tmp_path):
    (src / "model.safetensors").unlink()
    (src / "pytorch_model.bin").write_bytes(b"not unpickled")
    _import_fails(src, tmp_path / "out", r"only pickle weights \(pytorch_model\.bin\).*save_pretrained")


def test_tp_that_does_not_divide_heads(src, tmp_path):
    _import_fails(src, tmp_path / "out", r"tensor parallel size 3 does not divide num_attention_heads=4", tp=3)


def test_pp_that_does_not_divide_layers(src, tmp_path):
    _import_fails(src, tmp_path / "out", r"pipeline parallel size 3 does not divide num_layers=2", pp=3)


def test_existing_output_is_not_overwritten(src, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        import_hf_to_megatron(src, tmp_path / "out", show_progress=False)


def test_export_of_a_folder_that_is_not_a_checkpoint(src, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a Megatron checkpoint"):
        export_megatron_to_hf(src, tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_input_with_exit_code_2(src, tmp_path, capsys):
    assert main(["import", "--hf-model", str(src), "--megatron-path", str(tmp_path / "o"), "--tp", "3", "--no-progress"]) == 2
    assert "tensor parallel size 3 does not divide" in capsys.readouterr().err


def test_cli_round_trip_and_verify(src, tmp_path, capsys):
    mg, out = tmp_path / "mg", tmp_path / "hf"
    assert main(["import", "--hf-model", str(src), "--megatron-path", str(mg), "--no-progress"]) == 0
    assert main(["export", "--megatron-path", str(mg / "iter_0000000"), "--hf-path", str(out), "--hf-config-source", str(src), "--no-progress"]) == 0
    assert (out / "config.json").read_text() == (src / "config.json").read_text()
    assert main(["verify", "--hf-model", str(out), "--megatron-path", str(mg)]) == 0
    assert "PASS" in capsys.readouterr().out
    other = make_hf_model(tmp_path / "other", "qwen2", seed=3)
    shutil.rmtree(out)
    assert main(["verify", "--hf-model", str(other), "--megatron-path", str(mg)]) == 1
    assert "FAIL" in capsys.readouterr().out
