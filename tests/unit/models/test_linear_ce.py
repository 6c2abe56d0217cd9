"""Chunked linear cross-entropy: same loss and gradients as megatron-core's logits + vocab_parallel_cross_entropy."""

from __future__ import annotations

import pytest
import torch
from megatron.core import tensor_parallel

from sft_bridge_port.models.linear_ce import ChunkedLossGPTModel, linear_cross_entropy
from sft_bridge_port.models.tiny import make_tiny_hf_model
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import build_twins


def _reference(hidden, weight, labels):
    logits = hidden @ weight.t()  # [s, b, V]
    with parallel_context():  # megatron's CE reads the (size-1) tensor-parallel group
        return tensor_parallel.vocab_parallel_cross_entropy(logits, labels.t().contiguous()).t()


@pytest.mark.parametrize("keep_logits", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 7, 64])
def test_loss_and_grads_match_megatron(chunk, keep_logits):
    torch.manual_seed(0)
    s, b, h, vocab = 7, 2, 16, 50
    hidden = torch.randn(s, b, h, dtype=torch.float32, requires_grad=True)
    weight = torch.randn(vocab, h, dtype=torch.float32, requires_grad=True)
    labels = torch.randint(0, vocab, (b, s))
    grad = torch.rand(b, s, dtype=torch.float32)  # per-token weights, like a loss mask
    ref = _reference(hidden, weight, labels)
    ref_gh, ref_gw = torch.autograd.grad((ref * grad).sum(), (hidden, weight))
    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=chunk, keep_logits=keep_logits)
    gh, gw = torch.autograd.grad((out * grad).sum(), (hidden, weight))
    assert out.shape == (b, s) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-5)


def test_kept_logits_give_the_recomputed_values_bit_for_bit():
    torch.manual_seed(3)
    hidden = torch.randn(9, 2, 16, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(40, 16, dtype=torch.bfloat16, requires_grad=True)
    labels, grad = torch.randint(0, 40, (2, 9)), torch.rand(2, 9)
    results = []
    for keep in (False, True):
        out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=5, keep_logits=keep)
        results.append((out, *torch.autograd.grad((out * grad).sum(), (hidden, weight))))
    for recomputed, kept in zip(*results):
        assert torch.equal(recomputed, kept)


def test_out_of_range_label_counts_as_megatron_does_and_frozen_weight():
    torch.manual_seed(1)
    hidden = torch.randn(4, 1, 8, requires_grad=True)
    weight = torch.randn(10, 8)  # frozen head (LoRA): no weight gradient is computed
    labels = torch.tensor([[3, -100, 9, 10]])
    ref = _reference(hidden, weight, labels)
    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    row = hidden[1, 0] @ weight.t()  # megatron: loss of an out-of-range label is lse - max
    torch.testing.assert_close(out[0, 1], torch.logsumexp(row, -1) - row.max(), rtol=1e-5, atol=1e-5)
    (gh,) = torch.autograd.grad(out.sum(), hidden)
    (ref_gh,) = torch.autograd.grad(ref.sum(), hidden)
    torch.testing.assert_close(gh, ref_gh, rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="linear_ce_chunk_tokens"):
        linear_cross_entropy(torch.zeros(2, 1, 4), torch.zeros(5, 4), torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="do not match"):
        linear_cross_entropy(torch.zeros(2, 1, 4), torch.zeros(5, 4), torch.zeros(2, 1, dtype=torch.long), 4)


@pytest.mark.parametrize("tied", [True, False])
def test_model_loss_and_grads_equal_megatron_path(tmp_path, tied):
    hf_dir = make_tiny_hf_model(tmp_path, "llama", tie_word_embeddings=tied)
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (2, 24))
    pos = torch.arange(24)[None].expand(2, -1)
    with parallel_context():
        _, ref_model, _ = build_twins(hf_dir)
        _, model, provider = build_twins(hf_dir, linear_ce_chunk_tokens=10)
        assert isinstance(model, ChunkedLossGPTModel) and not isinstance(ref_model, ChunkedLossGPTModel)
        results = []
        for m in (ref_model, model):
            m.train()
            loss = m(ids, pos, None, labels=ids)
            loss.sum().backward()
            results.append((loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}))
        logits = model(ids, pos, None)  # no labels: megatron's own logits path
    (ref_loss, ref_grads), (loss, grads) = results
    assert loss.shape == (2, 24) and loss.dtype == torch.float32 and logits.shape[:2] == (2, 24)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-5, msg=name)


def test_provider_rejects_negative_chunk(tmp_path):
    from sft_bridge_port.models import get_provider

    provider = get_provider(make_tiny_hf_model(tmp_path, "llama"), linear_ce_chunk_tokens=-1)
    with pytest.raises(ValueError, match="linear_ce_chunk_tokens"):
        provider.finalize()


def _head_with_main_grad(vocab: int, h: int, **attrs) -> torch.Tensor:
    """A head weight carrying what megatron DDP gives a parameter: ``main_grad`` and ``grad_added_to_main_grad``."""
    weight = torch.randn(vocab, h, requires_grad=True)
    weight.main_grad = torch.ones(vocab, h)
    weight.grad_added_to_main_grad = False
    for key, value in attrs.items():
        setattr(weight, key, value)
    return weight


def test_fused_wgrad_accumulates_into_main_grad_with_megatrons_protocol():
    torch.manual_seed(2)
    hidden = torch.randn(6, 1, 8, requires_grad=True)
    labels = torch.randint(0, 12, (1, 6))
    weight = _head_with_main_grad(12, 8)
    ref_gw = torch.autograd.grad(_reference(hidden, weight, labels).sum(), weight)[0]
    out = linear_cross_entropy(hidden, weight, labels, chunk_tokens=4, fuse_wgrad=True)
    out.sum().backward()
    torch.testing.assert_close(weight.main_grad, 1 + ref_gw, rtol=1e-5, atol=1e-5)  # accumulated, not overwritten
    assert weight.grad_added_to_main_grad is True  # DDP's hook then skips its own add
    assert weight.grad is not None and weight.grad.shape == weight.shape  # so DDP's hook still fires


def test_fused_wgrad_of_a_tied_head_leaves_the_embedding_gradient_to_ddp():
    torch.manual_seed(3)
    ids = torch.tensor([[1, 5, 5, 2]])
    weight = _head_with_main_grad(12, 8, zero_out_wgrad=True)  # megatron marks a same-stage tied head so
    labels = torch.randint(0, 12, (1, 4))
    embed = lambda: torch.nn.functional.embedding(ids, weight).transpose(0, 1)  # noqa: E731  [s, b, h], same weight
    head_only = torch.autograd.grad(_reference(embed().detach(), weight, labels).sum(), weight)[0]
    total = torch.autograd.grad(_reference(embed(), weight, labels).sum(), weight)[0]
    out = linear_cross_entropy(embed(), weight, labels, chunk_tokens=3, fuse_wgrad=True)
    out.sum().backward()
    torch.testing.assert_close(weight.main_grad, 1 + head_only, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weight.grad, total - head_only, rtol=1e-5, atol=1e-5)  # the embedding's part only
    assert weight.grad_added_to_main_grad is False  # DDP adds weight.grad (zero_out_wgrad) into main_grad


def test_fused_wgrad_without_ddp_attributes_is_the_plain_gradient():
    torch.manual_seed(4)
    hidden = torch.randn(5, 2, 8, requires_grad=True)
    weight = torch.randn(9, 8, requires_grad=True)
    labels = torch.randint(0, 9, (2, 5))
    ref_gw = torch.autograd.grad(_reference(hidden, weight, labels).sum(), weight)[0]
    gw = torch.autograd.grad(linear_cross_entropy(hidden, weight, labels, 4, fuse_wgrad=True).sum(), weight)[0]
    torch.testing.assert_close(gw, ref_gw, rtol=1e-5, atol=1e-5)


def test_default_chunk_tokens_bounds_the_logits_of_one_chunk():
    from sft_bridge_port.models.linear_ce import CHUNK_ELEMENTS, default_chunk_tokens

    assert default_chunk_tokens(128_256) == 4096  # Llama 3: 4096 x 128256 bf16 logits = 1.0 GiB
    assert default_chunk_tokens(151_936) == 3328  # Qwen: multiple of 256 under the budget
    assert default_chunk_tokens(151_936) * 151_936 <= CHUNK_ELEMENTS
    assert default_chunk_tokens(4_000_000) == 1024  # never below the minimum


@pytest.mark.parametrize(("setting", "limit", "kept"), [(None, 48 * 256, True), (None, 48 * 256 - 1, False),
                                                         (True, 1, True), (False, 10**12, False)])
def test_model_keeps_logits_by_size_unless_told(tmp_path, monkeypatch, setting, limit, kept):
    """Default: keep a micro-batch's logits while tokens x vocab fits the limit (48 tokens x 256 here)."""
    from sft_bridge_port.models import linear_ce

    calls = []
    real = linear_ce.linear_cross_entropy
    monkeypatch.setattr(linear_ce, "KEEP_LOGITS_MAX_ELEMENTS", limit)
    spy = lambda *a, **k: calls.append(k["keep_logits"]) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(linear_ce, "linear_cross_entropy", spy)
    hf_dir = make_tiny_hf_model(tmp_path, "llama")
    ids = torch.randint(0, 256, (2, 24))
    with parallel_context():
        _, model, _ = build_twins(hf_dir, linear_ce_chunk_tokens=10, linear_ce_keep_logits=setting)
        model(ids, torch.arange(24)[None].expand(2, -1), None, labels=ids).sum().backward()
    assert calls == [kept]
