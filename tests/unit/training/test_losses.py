"""masked_next_token_loss: Bridge's contract, checked against hand computations."""

import logging
import math

import pytest
import torch

from sft_bridge_port.training.losses import (
    LossSpikeMonitor,
    create_masked_next_token_loss_function,
    masked_next_token_loss,
    spike_monitor,
)


def test_sum_count_and_reporting_match_hand_computation():
    losses = torch.tensor([[2.0, 1.0, 4.0], [0.5, 3.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.float32)
    loss, num_tokens, report = masked_next_token_loss(mask, losses)
    assert loss.item() == pytest.approx(1.0 + 4.0 + 0.5)
    assert num_tokens.dtype == torch.int32 and num_tokens.item() == 3
    assert torch.equal(report["lm loss"], torch.tensor([5.5, 3.0]))
    loss.backward()
    assert torch.equal(losses.grad, mask)  # a sum: each supervised token has weight 1


def test_all_masked_gives_zero_count_and_no_nan():
    loss, num_tokens, report = masked_next_token_loss(torch.zeros(2, 4), torch.full((2, 4), 3.0))
    assert loss.item() == 0.0 and num_tokens.item() == 0
    assert not torch.isnan(report["lm loss"]).any()


def test_masked_out_nan_does_not_poison_the_sum():
    losses = torch.tensor([[1.0, float("nan")]])
    loss, _, _ = masked_next_token_loss(torch.tensor([[1.0, 0.0]]), losses)
    assert loss.item() == 1.0


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "Inf")])
def test_nan_and_inf_are_fatal_with_a_clear_message(bad, word):
    with pytest.raises(RuntimeError, match=f"found {word} in local forward loss calculation"):
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[1.0, bad]]))
    loss, _, _ = masked_next_token_loss(torch.ones(1, 2), torch.tensor([[1.0, bad]]), check_for_nan_in_loss=False)
    assert not math.isfinite(loss.item())


def test_tuple_output_replaces_the_mask():
    losses = torch.tensor([[1.0, 2.0, 4.0]])
    own_mask = torch.tensor([[0.0, 0.0, 1.0]])
    loss, num_tokens, _ = masked_next_token_loss(torch.ones(1, 3), (losses, own_mask))
    assert loss.item() == 4.0 and num_tokens.item() == 1


def test_mask_and_losses_of_different_sizes_raise():
    with pytest.raises(ValueError, match="loss_mask has 4 elements"):
        masked_next_token_loss(torch.ones(1, 4), torch.ones(1, 3))


def test_spike_is_reported_not_fatal(caplog):
    spike_monitor.reset()
    try:
        for _ in range(5):
            masked_next_token_loss(torch.ones(1, 2), torch.full((1, 2), 1.0), check_for_spiky_loss=True)
        with caplog.at_level(logging.WARNING):
            loss, _, _ = masked_next_token_loss(torch.ones(1, 2), torch.full((1, 2), 50.0), check_for_spiky_loss=True)
        assert loss.item() == 100.0
        assert spike_monitor.spikes == [(50.0, 1.0)]
        assert "Spiky loss" in caplog.text
    finally:
        spike_monitor.reset()


def test_spike_monitor_threshold():
    below, above = LossSpikeMonitor(factor=10.0), LossSpikeMonitor(factor=10.0)
    assert [below.observe(v) for v in (2.0, 2.0, 19.0)] == [False, False, False]
    assert [above.observe(v) for v in (2.0, 2.0, 21.0)] == [False, False, True]


def test_factory_binds_mask_and_flags():
    fn = create_masked_next_token_loss_function(torch.tensor([[1.0, 0.0]]), check_for_nan_in_loss=False)
    loss, num_tokens, _ = fn(torch.tensor([[3.0, float("nan")]]))
    assert loss.item() == 3.0 and num_tokens.item() == 1


def test_deferred_checks_record_instead_of_syncing_and_name_the_micro_batch():
    from sft_bridge_port.training.losses import deferred_loss_checks

    with deferred_loss_checks() as checks:
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[1.0, 2.0]]))
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[1.0, float("inf")]]))  # no raise inside the block
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(RuntimeError, match=r"found Inf in local forward loss calculation \(micro-batch 1 of this step\)"):
        checks.raise_if_bad()
    with deferred_loss_checks() as fine:
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[1.0, 2.0]]))
    fine.raise_if_bad()  # all finite: nothing raised
    with pytest.raises(RuntimeError, match="found NaN"):  # outside a block the check is immediate again
        masked_next_token_loss(torch.ones(1, 2), torch.tensor([[float("nan"), 1.0]]))
