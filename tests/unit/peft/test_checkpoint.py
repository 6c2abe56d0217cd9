"""Adapter-only checkpoints, the training pre-wrap hook, and merging a checkpoint into a plain one."""

import functools
from pathlib import Path

import pytest
import torch
import yaml

from sft_bridge_port.peft import (
    DoRA,
    LoRA,
    adapter_sharded_state_dict,
    apply_peft_for_training,
    load_adapter_weights,
    merge_adapter_checkpoint,
    save_adapter_weights,
    trainable_parameters,
)
from sft_bridge_port.utils import ckpt_layout
from sft_bridge_port.utils.dist_context import parallel_context
from sft_bridge_port.utils.dist_ckpt import load_model_weights, save_model_weights
from tests.unit.peft.helpers import batch, logits, megatron_model, randomize_adapters


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


WIDE = dict(hidden_size=256, ffn_hidden_size=512, kv_channels=64)


def _save_base(tmp_path: Path, **overrides) -> Path:
    base = megatron_model(**overrides)
    iter_dir = tmp_path / "base" / ckpt_layout.iter_dir_name(0)
    save_model_weights([base], iter_dir)
    ckpt_layout.write_tracker(tmp_path / "base", 0)
    return tmp_path / "base"


@pytest.mark.parametrize("peft_cls", [LoRA, DoRA])
def test_adapter_checkpoint_round_trip_is_exact_and_small(tmp_path, peft_cls):
    with parallel_context(seed=1):
        base_root = _save_base(tmp_path, **WIDE)
        hook = functools.partial(apply_peft_for_training, peft_cls(dim=2), pretrained_checkpoint=base_root)
        model = hook([megatron_model(**WIDE)])
        assert all(".adapter." in k for k in adapter_sharded_state_dict(model)["model"])
        randomize_adapters(model[0])
        save_adapter_weights(model, tmp_path / "adapter" / "iter_0000005")
        tokens, pos = batch()
        with torch.no_grad():
            want = logits(model[0], tokens, pos)
        fresh = apply_peft_for_training(peft_cls(dim=2), [megatron_model(**WIDE)], pretrained_checkpoint=base_root)
        assert load_adapter_weights(fresh, tmp_path / "adapter" / "iter_0000005").name == "iter_0000005"
        with torch.no_grad():
            assert torch.equal(logits(fresh[0], tokens, pos), want)
        names = {n for p in trainable_parameters(fresh) for n, q in fresh[0].named_parameters() if q is p}
        assert names and all(".adapter." in n for n in names)
    full, adapter = _size(base_root), _size(tmp_path / "adapter")
    assert adapter < 0.05 * full, (adapter, full)  # dim=2 adapters hold ~1% of the weights


def test_loading_adapters_into_a_model_without_them_fails_clearly(tmp_path):
    with parallel_context(seed=1):
        with pytest.raises(ValueError, match="no adapter parameters"):
            load_adapter_weights([megatron_model()], tmp_path)


def test_merge_checkpoint_writes_a_plain_checkpoint_with_the_adapted_function(tmp_path):
    with parallel_context(seed=1):
        base_root = _save_base(tmp_path)
        peft = DoRA(dim=2)
        model = apply_peft_for_training(peft, [megatron_model()], pretrained_checkpoint=base_root)
        randomize_adapters(model[0])
        adapter_iter = tmp_path / "run" / "iter_0000007"
        save_adapter_weights(model, adapter_iter)
        (adapter_iter / ckpt_layout.CONFIG_FILE).write_text(yaml.safe_dump({"peft": {"_target_": "x"}, "train": {}}))
        tokens, pos = batch()
        with torch.no_grad():
            want = logits(model[0], tokens, pos)
        out_iter = merge_adapter_checkpoint(lambda: [megatron_model()], DoRA(dim=2), base_root, adapter_iter, tmp_path / "merged")
        assert out_iter == tmp_path / "merged" / "iter_0000007"
        assert ckpt_layout.read_tracker(tmp_path / "merged") == 7
        assert yaml.safe_load((out_iter / ckpt_layout.CONFIG_FILE).read_text())["peft"] is None
        plain = megatron_model()
        load_model_weights([plain], out_iter, strict=True)
        with torch.no_grad():
            got = logits(plain, tokens, pos)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with pytest.raises(FileExistsError):
            merge_adapter_checkpoint(lambda: [megatron_model()], DoRA(dim=2), base_root, adapter_iter, tmp_path / "merged")
