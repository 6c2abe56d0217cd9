"""Forward steps: batch checks, per-stage keys, packed-sequence params, signature adapter, model call."""

import functools

import pytest
import torch

from sft_bridge_port.training import gpt_step, vlm_step
from sft_bridge_port.training.batch import get_packed_seq_params, real_lengths, select_for_stage, validate_batch
from sft_bridge_port.training.state import GlobalState
from sft_bridge_port.training.step_signature import adapt_forward_step, wants_state
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.training.helpers import SEQ, collate, tiny_local_gpt


def _packed_batch():
    b = collate([0])
    b["cu_seqlens"] = torch.tensor([[0, 5, 12, 16, -1, -1]], dtype=torch.int32)
    b["cu_seqlens_argmin"] = torch.tensor([[4]])
    b["max_seqlen"] = torch.tensor([[7]])
    return b


def test_missing_keys_are_named():
    b = collate([0, 1])
    del b["labels"], b["loss_mask"]
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['labels', 'loss_mask'\]"):
        validate_batch(b)


def test_shape_mismatch_is_named():
    b = collate([0, 1])
    b["loss_mask"] = b["loss_mask"][:, :-1]
    with pytest.raises(ValueError, match=r"\['loss_mask'\] have shapes"):
        validate_batch(b)


def test_each_stage_gets_its_keys_and_every_stage_gets_cu_seqlens():
    b = _packed_batch()
    present = lambda d: sorted(k for k, v in d.items() if v is not None)  # noqa: E731
    middle = select_for_stage(b, is_first=False, is_last=False, device=torch.device("cpu"))
    assert present(middle) == ["cu_seqlens", "cu_seqlens_argmin", "max_seqlen"]
    first = select_for_stage(b, is_first=True, is_last=False, device=torch.device("cpu"))
    assert {"tokens", "position_ids", "cu_seqlens"} <= set(present(first)) and first["labels"] is None
    last = select_for_stage(b, is_first=False, is_last=True, device=torch.device("cpu"))
    assert {"labels", "loss_mask", "cu_seqlens"} <= set(present(last)) and last["tokens"] is None


def test_packed_seq_params_trim_padding():
    psp = get_packed_seq_params(_packed_batch())
    assert psp.qkv_format == "thd" and psp.max_seqlen_q == 7
    assert psp.cu_seqlens_q.tolist() == [0, 5, 12, 16] and psp.cu_seqlens_q.dtype == torch.int32
    b = _packed_batch()
    b["cu_seqlens_unpadded"] = torch.tensor([[0, 4, 11, 15, -1, -1]], dtype=torch.int32)
    b["cu_seqlens_unpadded_argmin"] = torch.tensor([[4]])
    psp = get_packed_seq_params(b)
    assert psp.cu_seqlens_q.tolist() == [0, 4, 11, 15] and psp.cu_seqlens_q_padded.tolist() == [0, 5, 12, 16]
    assert real_lengths(b) == [4, 7, 4]
    del b["cu_seqlens_argmin"]  # without the host argmin the -1 padding is found on the tensor
    assert get_packed_seq_params(b).cu_seqlens_kv_padded.tolist() == [0, 5, 12, 16]


def test_packed_batches_need_one_row():
    b = _packed_batch()
    b["cu_seqlens"] = b["cu_seqlens"].repeat(2, 1)
    with pytest.raises(ValueError, match="micro_batch_size=1"):
        get_packed_seq_params(b)


def _two(data_iterator, model):
    return ("two", data_iterator, model)


def _three_plan(data_iterator, model, return_schedule_plan=False):
    return ("three_plan", data_iterator, model)


def _three_state(state, data_iterator, model):
    return ("three_state", state, data_iterator, model)


def _four(state, data_iterator, model, return_schedule_plan=False):
    return ("four", state, data_iterator, model)


class _Functor:
    def __call__(self, state: GlobalState, data_iterator, model):
        return ("functor", state)


@pytest.mark.parametrize(
    "func, expected",
    [(_two, ("two", "it", "m")), (_three_plan, ("three_plan", "it", "m")), (_three_state, ("three_state", "S", "it", "m")),
     (_four, ("four", "S", "it", "m")), (functools.partial(_four), ("four", "S", "it", "m")), (_Functor(), ("functor", "S"))],
)
def test_all_bridge_step_signatures_are_adapted(func, expected):
    assert adapt_forward_step(func, "S")("it", "m") == expected


def test_state_detected_by_type_hint_and_bad_steps_rejected():
    def by_hint(s: GlobalState, it, m):
        return s

    assert wants_state(by_hint) and adapt_forward_step(by_hint, "S")("it", "m") == "S"
    with pytest.raises(TypeError, match="takes 1 positional"):
        adapt_forward_step(lambda it: None, None)


def test_gpt_forward_step_returns_per_token_loss_and_bound_loss_func():
    with parallel_context():
        model = tiny_local_gpt()
        batch = collate([0, 1, 2])
        state = GlobalState()
        out, loss_func = gpt_step.forward_step(state, iter([batch]), model)
        assert out.shape == (3, SEQ) and out.dtype == torch.float32
        loss, num_tokens, report = loss_func(out)
        assert num_tokens.item() == int(batch["loss_mask"].sum())
        assert loss.item() == pytest.approx(float((out * batch["loss_mask"]).sum()), rel=1e-6)
        assert state.flops.num_tokens == 3 * SEQ and state.flops.num_microbatches == 1
        with pytest.raises(ValueError, match="missing required key"):
            gpt_step.forward_step(state, iter([{"tokens": batch["tokens"]}]), model)


class _TinyVLM(torch.nn.Module):
    """Returns (per-token loss, own mask): image tokens at position 0 are excluded by the model."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids, position_ids, attention_mask, labels, pixel_values):
        losses = self.scale * pixel_values.mean() * torch.ones_like(labels, dtype=torch.float32)
        mask = torch.ones_like(losses)
        mask[:, 0] = 0
        return losses, mask


class _Visual:
    def __init__(self, pixels):
        self.pixels = pixels

    def normalized_for_model(self):
        return {"pixel_values": self.pixels}


def test_vlm_step_passes_visual_inputs_and_uses_the_model_mask():
    batch = collate([0, 1])
    batch["visual_inputs"] = _Visual(torch.full((2, 3, 4, 4), 2.0))
    out, loss_func = vlm_step.forward_step(None, iter([batch]), _TinyVLM())
    loss, num_tokens, _ = loss_func(out)
    assert num_tokens.item() == 2 * (SEQ - 1) and loss.item() == pytest.approx(2.0 * 2 * (SEQ - 1))
