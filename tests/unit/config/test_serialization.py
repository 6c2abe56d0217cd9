"""YAML / dict round trips: every field of a fully populated ConfigContainer comes back equal."""

from __future__ import annotations

import enum
import functools
import pathlib

import pytest
import torch
import yaml

from sft_bridge_port.config import (
    CheckpointConfig,
    CommOverlapConfig,
    ConfigContainer,
    DistributedDataParallelConfig,
    LoggerConfig,
    SchedulerConfig,
    TokenizerConfig,
    ValidationConfig,
    bf16_mixed,
    runtime_config_update,
)
from sft_bridge_port.config import serialization
from sft_bridge_port.data.config import PackedSequenceSpecs, default_squad_config
from tests.unit.config.helpers import assert_same, tiny_container, tiny_model


def _populated() -> ConfigContainer:
    cfg = tiny_container(
        ddp=DistributedDataParallelConfig(check_for_nan_in_grad=True, grad_reduce_in_fp32=True, bucket_size=1000),
        validation=ValidationConfig(eval_interval=5, eval_iters=2),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=2, start_weight_decay=0.033),
        dataset=default_squad_config(seq_length=64, packed_sequence=True),
        logger=LoggerConfig(log_interval=1, tensorboard_dir="/tmp/tb", wandb_project="p"),
        tokenizer=TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model="x/y", hf_tokenizer_kwargs={"a": 1}),
        checkpoint=CheckpointConfig(save="/tmp/ck", save_interval=5, pretrained_checkpoint="/tmp/pre"),
        comm_overlap=CommOverlapConfig(overlap_grad_reduce=True, bucket_size=10),
        mixed_precision=bf16_mixed(),
    )
    cfg.model.params_dtype = torch.bfloat16
    cfg.model.activation_func = torch.nn.functional.silu
    cfg.model.init_method = functools.partial(torch.nn.init.normal_, mean=0.0, std=0.02)
    cfg.model.recompute_modules = ["core_attn"]
    cfg.train.iterations_to_skip = [3, 4]
    cfg.optimizer.adam_beta2 = 0.98
    cfg.rng.seed = 5678
    cfg.profiling.profile_ranks = [0, 1]
    return cfg


def test_fully_populated_container_round_trips_through_yaml(tmp_path):
    cfg = _populated()
    path = tmp_path / "run_config.yaml"
    text = cfg.to_yaml(path)
    assert path.read_text() == text
    back = ConfigContainer.from_yaml(path)
    assert_same(cfg, back)
    assert back.to_dict() == cfg.to_dict()
    assert back.model.init_method.keywords == {"mean": 0.0, "std": 0.02}
    assert isinstance(back.dataset.packed_sequence_specs, PackedSequenceSpecs)
    assert back.dataset.process_example_fn is cfg.dataset.process_example_fn


def test_round_trip_after_runtime_config_update_is_exact():
    cfg = tiny_container(mixed_precision="bf16_mixed")
    runtime_config_update(cfg, world_size=1)
    back = ConfigContainer.from_yaml_text(cfg.to_yaml())
    assert_same(cfg, back)
    assert back.model.autocast_dtype == cfg.model.autocast_dtype


def test_yaml_uses_target_keys_like_bridge_run_config():
    data = yaml.safe_load(_populated().to_yaml())
    assert data["_target_"] == "sft_bridge_port.config.container.ConfigContainer"
    assert data["train"]["_target_"].endswith("TrainingConfig")
    assert data["model"]["params_dtype"] == {"_target_": "torch.bfloat16", "_call_": False}
    assert data["model"]["activation_func"] == {"_target_": "torch.nn.functional.silu", "_call_": False}
    assert data["model"]["init_method"] == {"_target_": "torch.nn.init.normal_", "_partial_": True, "mean": 0.0, "std": 0.02}
    assert "data_parallel_size" not in data


class _Color(enum.Enum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [torch.float16, torch.nn.functional.gelu, _Color.RED, (1, "a", None), pathlib.Path("/x/y"),
     functools.partial(torch.nn.init.normal_, mean=0.0, std=0.1), {"a": [1, {"b": torch.bfloat16}]}],
)
def test_values_round_trip(value):
    back = serialization.from_dict(yaml.safe_load(yaml.safe_dump(serialization.to_dict(value))))
    assert_same(value, back)


def test_c_builtin_gets_public_import_path():
    assert serialization.import_path(torch.nn.functional.gelu) == "torch.nn.functional.gelu"


def test_unimportable_callable_is_refused_in_strict_mode_and_nulled_otherwise():
    with pytest.raises(TypeError, match="no import path"):
        serialization.to_dict(lambda x: x, strict=True)
    assert serialization.to_dict(lambda x: x) is None


def test_unknown_field_in_yaml_names_closest(tmp_path):
    data = tiny_container().to_dict()
    data["train"]["train_iter"] = 5
    with pytest.raises(TypeError, match="did you mean 'train_iters'"):
        ConfigContainer.from_dict(data)


def test_bridge_target_names_map_to_our_classes():
    obj = serialization.from_dict({"_target_": "megatron.bridge.training.config.TrainingConfig", "train_iters": 3})
    assert type(obj).__name__ == "TrainingConfig" and obj.train_iters == 3


def test_model_provider_round_trips_alone():
    model = tiny_model()
    back = serialization.from_yaml(serialization.to_yaml(model))
    assert_same(model, back)
