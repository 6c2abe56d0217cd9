"""Bridge's effective-value rules in runtime_config_update, one test per rule, plus idempotence."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sft_bridge_port.config import (
    DistributedDataParallelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainingConfig,
    get_mixed_precision_config,
    runtime_config_update,
)
from sft_bridge_port.data.config import FinetuningDatasetConfig, PackedSequenceSpecs
from tests.unit.config.helpers import tiny_container


def test_bf16_mixed_is_copied_and_forces_grad_reduce_in_fp32():
    cfg = tiny_container(mixed_precision="bf16_mixed", ddp=DistributedDataParallelConfig(grad_reduce_in_fp32=False))
    runtime_config_update(cfg, world_size=1)
    assert cfg.ddp.grad_reduce_in_fp32 is True
    assert cfg.model.bf16 and cfg.model.params_dtype is torch.bfloat16 and cfg.model.pipeline_dtype is torch.bfloat16
    assert cfg.optimizer.bf16 and cfg.optimizer.params_dtype is torch.bfloat16
    assert cfg.mixed_precision.bf16  # the name was resolved to the preset object


def test_resolved_preset_object_can_keep_grad_reduce_in_bf16():
    mp = get_mixed_precision_config("bf16-mixed")
    mp.grad_reduce_in_fp32 = False
    cfg = tiny_container(mixed_precision=mp)
    runtime_config_update(cfg, world_size=1)
    assert cfg.ddp.grad_reduce_in_fp32 is False


def test_fp16_preset_and_unknown_preset():
    cfg = tiny_container(mixed_precision="fp16_mixed")
    runtime_config_update(cfg, world_size=1)
    assert cfg.model.fp16 and cfg.model.params_dtype is torch.half and cfg.ddp.grad_reduce_in_fp32 is False
    with pytest.raises(ValueError, match="bf16_mixed"):
        runtime_config_update(tiny_container(mixed_precision="bf32_mixed"), world_size=1)


@pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is not None, reason="TE installed")
def test_fp8_without_transformer_engine_is_a_clear_error():
    with pytest.raises(ValueError, match="Transformer Engine"):
        runtime_config_update(tiny_container(mixed_precision="bf16_with_fp8_current_scaling_mixed"), world_size=1)


@pytest.mark.parametrize("ddp_flag, opt_flag", [(True, False), (False, True)])
def test_distributed_optimizer_is_or_synced(ddp_flag, opt_flag):
    cfg = tiny_container(ddp=DistributedDataParallelConfig(use_distributed_optimizer=ddp_flag),
                         optimizer=OptimizerConfig(lr=1e-4, use_distributed_optimizer=opt_flag))
    runtime_config_update(cfg, world_size=1)
    assert cfg.ddp.use_distributed_optimizer and cfg.optimizer.use_distributed_optimizer


def test_train_samples_become_train_iters():
    cfg = tiny_container(train=TrainingConfig(train_samples=100, global_batch_size=8, micro_batch_size=1))
    runtime_config_update(cfg, world_size=1)
    assert cfg.train.train_iters == 12
    cfg.train.train_iters = 5
    with pytest.raises(ValueError, match="disagree"):
        runtime_config_update(cfg, world_size=1)


def test_packed_data_needs_micro_batch_size_one():
    specs = PackedSequenceSpecs(packed_sequence_size=64)
    cfg = tiny_container(dataset=FinetuningDatasetConfig(seq_length=64, packed_sequence_specs=specs),
                         train=TrainingConfig(train_iters=4, global_batch_size=8, micro_batch_size=2))
    with pytest.raises(ValueError, match="micro_batch_size=1"):
        runtime_config_update(cfg, world_size=1)
    cfg.train.micro_batch_size = 1
    runtime_config_update(cfg, world_size=1)


def test_context_parallel_sets_per_token_loss_and_checks_seq_length():
    cfg = tiny_container(dataset=FinetuningDatasetConfig(seq_length=64))
    cfg.model.context_parallel_size = 2
    cfg.ddp.average_in_collective = True
    runtime_config_update(cfg, world_size=2)
    assert cfg.model.calculate_per_token_loss is True and cfg.ddp.average_in_collective is False
    cfg.dataset.seq_length = 66
    with pytest.raises(ValueError, match=r"dataset.seq_length=66 must be divisible by 2 x context_parallel_size = 4"):
        runtime_config_update(cfg, world_size=2)


def test_scheduler_defaults_from_train_iters():
    cfg = tiny_container(scheduler=SchedulerConfig(lr_warmup_iters=2))
    cfg.optimizer.weight_decay = 0.1
    runtime_config_update(cfg, world_size=1)
    s = cfg.scheduler
    assert s.lr_decay_iters == 10 and s.lr_decay_steps == 80 and s.lr_warmup_steps == 16 and s.wd_incr_steps == 80
    assert s.start_weight_decay == s.end_weight_decay == 0.1


def test_data_parallel_size_and_batch_divisibility():
    cfg = tiny_container()
    cfg.model.tensor_model_parallel_size = 2
    runtime_config_update(cfg, world_size=8)
    assert cfg.data_parallel_size == 4
    with pytest.raises(ValueError, match="not a multiple of tensor x pipeline x context parallel = 2"):
        runtime_config_update(cfg, world_size=3)
    cfg.train.global_batch_size = 6
    with pytest.raises(ValueError, match="global_batch_size=6 must be a multiple"):
        runtime_config_update(cfg, world_size=8)


def test_deprecated_train_eval_fields_move_to_validation():
    cfg = tiny_container()
    cfg.train.eval_interval = 30
    with pytest.warns(FutureWarning):
        runtime_config_update(cfg, world_size=1)
    assert cfg.validation.eval_interval == 30 and cfg.train.eval_interval is None


def test_missing_lr_and_iters_are_clear_errors():
    with pytest.raises(ValueError, match="optimizer.lr"):
        runtime_config_update(tiny_container(optimizer=OptimizerConfig()), world_size=1)
    with pytest.raises(ValueError, match="train_iters"):
        runtime_config_update(tiny_container(train=TrainingConfig(global_batch_size=8, micro_batch_size=1)), world_size=1)


def test_optimizer_validation_is_deferred_to_runtime():
    opt = OptimizerConfig(lr=1e-4, main_grads_dtype=torch.bfloat16)  # megatron-core would assert here
    opt.main_grads_dtype = torch.float32
    cfg = tiny_container(optimizer=opt)
    runtime_config_update(cfg, world_size=1)
    assert cfg.optimizer.use_precision_aware_optimizer_no_fp8_or_ds_fp8 is False


def test_runtime_config_update_is_idempotent_and_finalizes_model():
    cfg = tiny_container(mixed_precision="bf16_mixed", ddp=DistributedDataParallelConfig(grad_reduce_in_fp32=False))
    runtime_config_update(cfg, world_size=1)
    first = cfg.to_dict()
    assert cfg.model.kv_channels == 16 and cfg.model.ffn_hidden_size == 256  # derived by finalize()
    runtime_config_update(cfg, world_size=1)
    assert cfg.to_dict() == first


def test_optimizer_precision_must_match_the_model_without_a_preset():
    # A recipe template builds a bf16 optimizer; a user who drops mixed precision for an fp32 model must hear
    # about the mismatch here, not as "Param id 0 does not match any model sharded param" at the first save.
    cfg = tiny_container(mixed_precision=None)
    cfg.model.bf16 = False
    cfg.optimizer.bf16 = True
    with pytest.raises(ValueError, match=r"cfg.model.bf16=False but cfg.optimizer.bf16=True"):
        runtime_config_update(cfg, world_size=1)
    cfg.optimizer.bf16 = False
    runtime_config_update(cfg, world_size=1)


def test_bf16_pure_keeps_the_optimizer_off_fp32_master_weights():
    cfg = tiny_container(mixed_precision="bf16_pure", ddp=DistributedDataParallelConfig(grad_reduce_in_fp32=True))
    runtime_config_update(cfg, world_size=1)
    assert cfg.model.bf16 and cfg.model.params_dtype is torch.bfloat16
    assert cfg.optimizer.bf16 is False  # megatron-core's plain optimizer over the bf16 weights
    assert cfg.ddp.grad_reduce_in_fp32 is False


def test_bf16_pure_refuses_the_distributed_optimizer_and_non_bf16():
    cfg = tiny_container(mixed_precision="bf16_pure")
    cfg.optimizer.use_distributed_optimizer = True
    with pytest.raises(ValueError, match="distributed optimizer, which always keeps fp32 master weights"):
        runtime_config_update(cfg, world_size=1)
    mp = get_mixed_precision_config("fp16_mixed")
    mp.fp32_master_weights = False
    with pytest.raises(ValueError, match="fp32_master_weights=False is for bf16 training only"):
        runtime_config_update(tiny_container(mixed_precision=mp), world_size=1)
