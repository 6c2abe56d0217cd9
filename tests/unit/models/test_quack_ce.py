"""The chunked loss on quack's kernels computes megatron's loss and gradients, and runs only where it may.

On CPU quack's GEMMs and its cross-entropy kernel are replaced by references written here from quack's documented
contract (``cross_entropy_fwd_out`` writes the loss and, in place, ``softmax - onehot``), which checks our wiring:
the gradient applied on the narrow side of each GEMM, kept vs recomputed ``dlogits``, megatron's ``main_grad``
protocol. The GPU test checks the real kernels against the torch path.
"""

from __future__ import annotations

import types

import pytest
import torch

from sft_bridge_port.models import linear_ce, quack_ce, quack_norm
from sft_bridge_port.models.flash_cute import AUTO_MIN_TOKENS
from sft_bridge_port.models.linear_ce import label_bounds, label_bounds_fit, linear_cross_entropy
from sft_bridge_port.models.quack_ce import QuackLinearCrossEntropy, quack_ce_runs
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import build_twins, quack_runs_here


def _reference_cross_entropy(x, target, target_logit, loss, lse, dx, weight, ignore_index):
    """quack's ``cross_entropy_fwd_out`` for the arguments the chunked loss passes (no target_logit / weight)."""
    assert target_logit is None and weight is None and not (target == ignore_index).any()
    logits = x.float()
    row_lse = torch.logsumexp(logits, dim=-1)
    loss.copy_(row_lse - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1))
    if lse is not None:
        lse.copy_(row_lse)
    if dx is not None:
        probs = torch.exp(logits - row_lse.unsqueeze(-1))
        dx.copy_(probs - torch.nn.functional.one_hot(target, x.shape[-1]).to(probs.dtype))


def _reference_gemms() -> types.SimpleNamespace:
    def gemm(a, b, out=None):
        return torch.mm(a, b, out=out)

    def gemm_add_inplace(a, b, out, dynamic_scheduler=False):
        out += (a.float() @ b.float()).to(out.dtype)

    return types.SimpleNamespace(gemm=gemm, gemm_add_inplace=gemm_add_inplace)


@pytest.fixture
def reference_quack(monkeypatch):
    monkeypatch.setattr(quack_ce, "quack_gemms", _reference_gemms)
    monkeypatch.setattr(quack_ce, "quack_cross_entropy", lambda: _reference_cross_entropy)


def _megatron(hidden, weight, labels):
    from megatron.core import tensor_parallel

    with parallel_context():
        return tensor_parallel.vocab_parallel_cross_entropy(hidden @ weight.t(), labels.t().contiguous()).t()


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_loss_and_grads_equal_megatrons(reference_quack, chunk, keep):
    torch.manual_seed(0)
    s, b, h, vocab = 7, 2, 16, 40
    hidden = torch.randn(s, b, h, requires_grad=True)
    weight = torch.randn(vocab, h, requires_grad=True)
    labels = torch.randint(0, vocab, (b, s))
    grad = torch.rand(b, s)  # per-token weights, like a loss mask: applied after the kernel wrote dlogits
    ref = _megatron(hidden, weight, labels)
    ref_grads = torch.autograd.grad((ref * grad).sum(), (hidden, weight))
    flat = hidden.transpose(0, 1).reshape(-1, h)  # the function's own layout: tokens of row 0, then row 1
    out = QuackLinearCrossEntropy.apply(flat, weight, labels.reshape(-1), chunk, False, keep).view(b, s)
    grads = torch.autograd.grad((out * grad).sum(), (hidden, weight))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_kept_dlogits_give_the_recomputed_bits_and_main_grad_accumulates(reference_quack):
    torch.manual_seed(1)
    hidden = torch.randn(9, 16, dtype=torch.bfloat16, requires_grad=True)
    labels, grad = torch.randint(0, 40, (9,)), torch.rand(9)
    results = []
    for keep in (True, False):
        weight = torch.randn(40, 16, generator=torch.Generator().manual_seed(2)).bfloat16().requires_grad_()
        weight.main_grad, weight.grad_added_to_main_grad = torch.ones(40, 16), False  # megatron DDP's buffer
        out = QuackLinearCrossEntropy.apply(hidden, weight, labels, 4, True, keep)
        (out * grad).sum().backward()
        assert weight.grad_added_to_main_grad is True  # megatron's protocol: DDP's hook adds nothing more
        results.append((out.detach(), hidden.grad.clone(), weight.main_grad.clone()))
        hidden.grad = None
    for kept, recomputed in zip(*results):
        assert torch.equal(kept, recomputed)
    ref_w = weight.detach().float().requires_grad_()
    ref = torch.nn.functional.cross_entropy(hidden.detach().float() @ ref_w.t(), labels, reduction="none")
    (ref_gw,) = torch.autograd.grad((ref * grad).sum(), ref_w)
    torch.testing.assert_close(results[0][2], 1 + ref_gw, rtol=2e-2, atol=2e-2)  # bf16 inputs, fp32 accumulation


def test_label_bounds_say_whether_labels_fit_the_vocabulary():
    labels = torch.tensor([[3, 0, 9]])
    assert label_bounds_fit(label_bounds(labels), 10)
    assert not label_bounds_fit(label_bounds(labels), 9)
    assert not label_bounds_fit(label_bounds(torch.tensor([[-100, 2]])), 10)
    assert label_bounds_fit(label_bounds(torch.zeros(0, dtype=torch.long)), 1)


def test_runs_only_where_it_may(monkeypatch):
    h, w = torch.zeros(AUTO_MIN_TOKENS, 16, dtype=torch.bfloat16), torch.zeros(40, 16, dtype=torch.bfloat16)
    never = lambda: pytest.fail("the label range was asked although the kernel cannot run")  # noqa: E731
    assert not quack_ce_runs("torch", h, w, never)
    assert not quack_ce_runs("auto", h[:-1], w, never)  # below the token floor
    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    assert not quack_ce_runs("auto", h, w, never)  # CPU
    with pytest.raises(RuntimeError, match="ce_kernel='quack'.*device cpu is not a Hopper.*'auto'"):
        quack_ce_runs("quack", h, w, never)
    monkeypatch.setattr(quack_norm, "cute_arch", lambda t: 9)
    assert quack_ce_runs("auto", h, w, lambda: True)
    assert not quack_ce_runs("auto", h, w, lambda: False)  # a label outside [0, V): megatron's loss, torch path
    with pytest.raises(RuntimeError, match=r"label lies outside \[0, 40\)"):
        quack_ce_runs("quack", h, w, lambda: False)
    assert not quack_ce_runs("auto", h.float(), w.float(), never)


def test_linear_cross_entropy_dispatches_and_checks_the_range_itself(reference_quack, monkeypatch):
    """Called directly (no model), the range is checked on the spot; an out-of-range label keeps megatron's path."""
    monkeypatch.setattr(quack_norm, "cute_arch", lambda t: 9)
    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    monkeypatch.setattr(quack_ce, "declined", lambda kernel, fallback, tokens: kernel == fallback)  # no token floor
    used = []
    monkeypatch.setattr(QuackLinearCrossEntropy, "apply", lambda *a: used.append("quack") or torch.zeros(4))
    hidden, weight = torch.randn(4, 1, 8, dtype=torch.bfloat16), torch.randn(16, 8, dtype=torch.bfloat16)
    linear_cross_entropy(hidden, weight, torch.tensor([[3, 1, 15, 0]]), 2, kernel="auto")
    assert used == ["quack"]
    out = linear_cross_entropy(hidden, weight, torch.tensor([[3, -100, 9, 0]]), 2, kernel="auto")
    assert used == ["quack"] and out.shape == (1, 4)  # the torch path ran
    with pytest.raises(RuntimeError, match=r"label lies outside \[0, 16\)"):
        linear_cross_entropy(hidden, weight, torch.tensor([[3, 1, 16, 0]]), 2, kernel="quack")


def test_model_passes_its_kernel_and_its_labels_range(tmp_path, monkeypatch):
    from sft_bridge_port.models.tiny import make_tiny_hf_model

    seen = []
    real = linear_ce.linear_cross_entropy

    def spy(*args, **kwargs):
        seen.append((kwargs["kernel"], kwargs["labels_in_range"]()))
        return real(*args, **kwargs)

    monkeypatch.setattr(linear_ce, "linear_cross_entropy", spy)
    ids = torch.randint(0, 256, (2, 24))
    with parallel_context():
        _, model, _ = build_twins(make_tiny_hf_model(tmp_path, "llama"), linear_ce_chunk_tokens=10, ce_kernel="torch")
        model(ids, torch.arange(24)[None].expand(2, -1), None, labels=ids).sum().backward()
        bad = ids.clone()
        bad[0, 3] = 256  # == vocab: out of range
        model(ids, torch.arange(24)[None].expand(2, -1), None, labels=bad)
    assert seen == [("torch", True), ("torch", False)]


@pytest.mark.gpu
@pytest.mark.skipif(not quack_runs_here(), reason="needs quack-kernels on a Hopper/Blackwell GPU")
@pytest.mark.parametrize("keep", [True, False])
def test_quack_kernels_match_the_torch_path_on_the_gpu(keep):
    torch.manual_seed(0)
    tokens, h, vocab = AUTO_MIN_TOKENS, 256, 4096
    hidden = torch.randn(tokens, 1, h, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = (torch.randn(vocab, h, device="cuda") / h**0.5).bfloat16().requires_grad_()
    labels = torch.randint(0, vocab, (1, tokens), device="cuda")
    grad = torch.rand(1, tokens, device="cuda") / tokens
    results = []
    for kernel in ("torch", "quack"):
        out = linear_cross_entropy(hidden, weight, labels, 2048, keep_logits=keep, kernel=kernel)
        results.append((out, *torch.autograd.grad((out * grad).sum(), (hidden, weight))))
    for name, ref, got in zip(("loss", "dx", "dw"), *results):
        torch.testing.assert_close(got.float(), ref.float(), rtol=2e-2, atol=2e-2 * ref.float().abs().max().item(),
                                   msg=lambda m, n=name: f"{n}: {m}")
