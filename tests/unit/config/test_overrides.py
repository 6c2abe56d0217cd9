"""Hydra-style overrides and YAML files: nested keys, None, lists, dtypes, callables; bad keys and types."""

from __future__ import annotations

import pytest
import torch
import yaml

from sft_bridge_port.config import CommOverlapConfig, parse_override, process_config_with_overrides
from tests.unit.config.helpers import tiny_container


@pytest.mark.parametrize(
    "text, key, value",
    [("train.train_iters=100", "train.train_iters", 100), ("optimizer.lr=1e-5", "optimizer.lr", 1e-5),
     ("peft=null", "peft", None), ("peft=None", "peft", None), ("a.b=[1, 2]", "a.b", [1, 2]),
     ("x=true", "x", True), ("s=hello world", "s", "hello world"), ("+n=-3", "n", -3), ("e=", "e", "")],
)
def test_parse_override(text, key, value):
    assert parse_override(text) == (key, value)


def test_overrides_set_nested_fields_with_types():
    cfg = tiny_container(comm_overlap=CommOverlapConfig())
    process_config_with_overrides(cfg, cli_overrides=[
        "train.train_iters=100", "optimizer.lr=1e-5", "model.tensor_model_parallel_size=2",
        "model.params_dtype=bf16", "optimizer.main_grads_dtype=torch.float32", "train.iterations_to_skip=[1,2]",
        "model.activation_func=torch.nn.functional.silu", "comm_overlap=null", "scheduler.lr_warmup_iters=3",
        "validation.eval_interval=7", "model.init_method_std=1", "checkpoint.save=123",
    ])
    assert cfg.train.train_iters == 100 and cfg.optimizer.lr == 1e-5
    assert cfg.model.tensor_model_parallel_size == 2 and cfg.model.params_dtype is torch.bfloat16
    assert cfg.optimizer.main_grads_dtype is torch.float32 and cfg.train.iterations_to_skip == [1, 2]
    assert cfg.model.activation_func is torch.nn.functional.silu and cfg.comm_overlap is None
    assert cfg.validation.eval_interval == 7 and cfg.scheduler.lr_warmup_iters == 3
    assert cfg.model.init_method_std == 1.0 and isinstance(cfg.model.init_method_std, float)
    assert cfg.checkpoint.save == "123"


def test_priority_cli_over_yaml_over_recipe(tmp_path):
    cfg = tiny_container()
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"train": {"train_iters": 50, "global_batch_size": 16},
                                    "optimizer": {"lr": 3e-4}, "model": {"params_dtype": "bf16"}}))
    process_config_with_overrides(cfg, path, ["train.train_iters=7"])
    assert cfg.train.train_iters == 7          # CLI wins over YAML
    assert cfg.train.global_batch_size == 16   # YAML wins over recipe
    assert cfg.optimizer.lr == 3e-4 and cfg.model.params_dtype is torch.bfloat16
    assert cfg.train.micro_batch_size == 1     # untouched recipe value


def test_a_full_run_config_yaml_applies_as_overrides(tmp_path):
    source = tiny_container()
    source.train.train_iters = 33
    source.model.hidden_size = 128
    path = tmp_path / "run_config.yaml"
    source.to_yaml(path)
    cfg = process_config_with_overrides(tiny_container(), path)
    assert cfg.to_dict() == source.to_dict()


@pytest.mark.parametrize(
    "override, error, match",
    [("train.train_iter=3", ValueError, r"unknown config key 'train.train_iter'. Did you mean 'train.train_iters'"),
     ("optimzer.lr=1", ValueError, r"Did you mean 'optimizer'"),
     ("model.num_layer=3", ValueError, r"Did you mean 'model.num_layers'"),
     ("train.train_iters=abc", TypeError, r"bad value for 'train.train_iters': expected int"),
     ("train.micro_batch_size=1.5", TypeError, r"train.micro_batch_size"),
     ("rng.seed=null", TypeError, r"rng.seed"),
     ("train.manual_gc=3", TypeError, r"train.manual_gc"),
     ("model.params_dtype=bf17", TypeError, r"torch dtype"),
     ("scheduler.lr_decay_style=cosin", TypeError, r"one of"),
     ("train.iterations_to_skip=5", TypeError, r"list"),
     ("train.train_iters", ValueError, r"key.subkey=value"),
     ("comm_overlap.bucket_size=3", ValueError, r"parent is None")],
)
def test_bad_overrides_raise_naming_the_key(override, error, match):
    with pytest.raises(error, match=match):
        process_config_with_overrides(tiny_container(), cli_overrides=[override])


def test_missing_yaml_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        process_config_with_overrides(tiny_container(), tmp_path / "nope.yaml")
