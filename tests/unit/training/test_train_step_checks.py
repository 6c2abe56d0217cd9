"""A NaN loss in any micro-batch stops ``train_step`` before the optimizer step: no weight changes."""

from __future__ import annotations

import functools

import pytest
import torch


def test_nan_loss_in_the_second_micro_batch_stops_the_step_before_the_update():
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig

    from sft_bridge_port.config.training_configs import SchedulerConfig
    from sft_bridge_port.training.gpt_step import forward_step
    from sft_bridge_port.training.optim import attach_schedule_hooks, build_optimizer, build_scheduler
    from sft_bridge_port.training.train import LoopSpec, train_step
    from sft_bridge_port.utils.dist_context import parallel_context
    from tests.unit.training.helpers import SEQ, collate, tiny_provider

    with parallel_context():
        provider = tiny_provider()
        provider.calculate_per_token_loss = True
        model = provider.provide_distributed_model(ddp_config=DistributedDataParallelConfig())
        opt_cfg = OptimizerConfig(optimizer="adam", lr=1e-2, min_lr=1e-2, weight_decay=0.0, clip_grad=1.0)
        optimizer = build_optimizer(opt_cfg, model)
        scheduler = build_scheduler(optimizer, SchedulerConfig(lr_decay_style="constant"), opt_cfg, 100, 3)
        attach_schedule_hooks(model, optimizer)
        calls = []

        def poisoned(data_iterator, chunk):
            output, loss_func = forward_step(None, data_iterator, chunk)
            calls.append(len(calls))
            return (output * float("nan") if len(calls) == 2 else output), loss_func

        spec = LoopSpec(3, 1, 3, SEQ)
        before = {n: p.detach().clone() for n, p in model[0].named_parameters()}
        data = iter([collate([i]) for i in range(3)])
        with pytest.raises(RuntimeError, match=r"found NaN .*\(micro-batch 1 of this step\)"):
            train_step(poisoned, data, model, optimizer, scheduler, spec)
        assert len(calls) == 3  # every micro-batch ran: no host sync stopped the schedule early
        for name, param in model[0].named_parameters():
            assert torch.equal(param, before[name]), name
        good = iter([collate([i]) for i in range(3)])
        train_step(functools.partial(forward_step, None), good, model, optimizer, scheduler, spec)
        assert any(not torch.equal(p, before[n]) for n, p in model[0].named_parameters())  # a clean step updates
