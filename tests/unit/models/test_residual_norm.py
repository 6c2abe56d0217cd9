"""The residual add folded into the next RMSNorm: same model outputs and gradients, taken only where it may be.

On CPU quack's RMSNorm kernels are replaced by references written here from their documented contract (the sum in
fp32, normalised before rounding; the backward adds the sum's gradient), which checks our wiring into megatron's
unchanged layer: which norm each add is bound to, that the norm reuses exactly the tensor it was handed, megatron's
path everywhere else. The GPU test checks the real kernels.
"""

from __future__ import annotations

import pytest
import torch

from sft_bridge_port.models import quack_norm
from sft_bridge_port.models.quack_norm import AddRMSNormFunction, QuackableRMSNorm
from sft_bridge_port.models.residual_norm import ResidualIntoNorm, link_residual_norms
from sft_bridge_port.models.tiny import make_tiny_hf_model
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import build_twins, quack_runs_here


def _norm_fp32(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def _reference_fwd(x, weight, out, bias, rstd, mean, residual, residual_out, eps):
    summed = x.float() + residual.float()
    residual_out.copy_(summed)
    rstd.copy_(torch.rsqrt(summed.pow(2).mean(-1) + eps))
    out.copy_(summed * rstd.unsqueeze(-1) * weight.float())


def _reference_bwd(x, weight, dout, rstd, dresidual_out, has_bias, has_residual):
    """RMSNorm's backward from the saved ``rstd``: ``dx = rstd * (g - xhat * mean(g * xhat))``, ``g = dout * w``."""
    xhat = x.float() * rstd.unsqueeze(-1)
    g = dout.float() * weight.float()
    dx = rstd.unsqueeze(-1) * (g - xhat * (g * xhat).mean(-1, keepdim=True))
    if dresidual_out is not None:
        dx = dx + dresidual_out.float()
    dx = dx.to(x.dtype)
    return dx, (dout.float() * xhat).sum(0).to(weight.dtype), None, dx


@pytest.fixture
def reference_quack(monkeypatch):
    """quack's RMSNorm kernels as torch code; every norm believes quack runs here."""
    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    monkeypatch.setattr(quack_norm, "cute_arch", lambda t: 9)
    monkeypatch.setattr(quack_norm, "quack_add_rmsnorm_ops", lambda: (_reference_fwd, _reference_bwd))
    plain = lambda x, w, eps: _norm_fp32(x.float(), w, eps).to(x.dtype)  # noqa: E731
    monkeypatch.setattr(quack_norm, "_quack_rmsnorm", lambda: plain)


def test_add_rmsnorm_function_gives_the_sum_its_norm_and_both_gradients(reference_quack):
    torch.manual_seed(0)
    branch, residual = torch.randn(6, 1, 16, requires_grad=True), torch.randn(6, 1, 16, requires_grad=True)
    weight = torch.randn(16, requires_grad=True)
    out, summed = AddRMSNormFunction.apply(branch, residual, weight, 1e-5)
    ref_summed = branch + residual
    ref_out = torch.nn.functional.rms_norm(ref_summed, (16,), weight, 1e-5)
    torch.testing.assert_close(summed, ref_summed)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert out._base is None and summed._base is None  # megatron's make_viewless_tensor leaves them as they are
    d_out, d_sum = torch.randn_like(out), torch.randn_like(out)
    got = torch.autograd.grad((out * d_out).sum() + (summed * d_sum).sum(), (branch, residual, weight))
    want = torch.autograd.grad((ref_out * d_out).sum() + (ref_summed * d_sum).sum(), (branch, residual, weight))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_norm_reuses_only_the_tensor_it_was_handed_unchanged(reference_quack):
    norm = QuackableRMSNorm(8, eps=1e-5, kernel="quack")
    x, residual = torch.randn(4, 8, dtype=torch.bfloat16), torch.randn(4, 8, dtype=torch.bfloat16)
    summed = norm.add_and_normalize(x, residual)
    kept = norm._normalized[2]
    assert norm(summed) is kept and norm._normalized is None  # used once
    summed = norm.add_and_normalize(x, residual)
    assert norm(summed.clone()) is not norm._normalized  # another tensor: normalised anew, the kept one dropped
    summed = norm.add_and_normalize(x, residual)
    kept = norm._normalized[2]
    summed.mul_(2)  # changed in place since: the kept normalisation is stale
    out = norm(summed)
    assert out is not kept
    torch.testing.assert_close(out.float(), _norm_fp32(summed.float(), norm.weight, 1e-5), rtol=1e-2, atol=1e-2)


def _tiny_model(tmp_path, **overrides):
    hf_dir = make_tiny_hf_model(tmp_path, "llama", num_hidden_layers=2)
    _, model, provider = build_twins(hf_dir, norm_kernel="quack", **overrides)
    return model.bfloat16(), provider


def test_adds_bind_to_the_norm_that_reads_them_next(tmp_path, reference_quack):
    with parallel_context():
        model, _ = _tiny_model(tmp_path)
        gpt = model.module if hasattr(model, "module") else model
        layers = list(gpt.decoder.layers)
        assert [layer.self_attn_bda.next_norm for layer in layers] == [layer.pre_mlp_layernorm for layer in layers]
        assert [layer.mlp_bda.next_norm for layer in layers] == [layers[1].input_layernorm, gpt.decoder.final_layernorm]
        assert link_residual_norms(gpt) == 4
        recomputed, _ = _tiny_model(tmp_path / "r", recompute_granularity="full", recompute_method="uniform",
                                    recompute_num_layers=1)  # fmt: skip
        gpt = recomputed.module if hasattr(recomputed, "module") else recomputed
        assert all(layer.self_attn_bda.next_norm is None for layer in gpt.decoder.layers)


def test_model_values_and_grads_equal_megatrons_adds(tmp_path, reference_quack, monkeypatch):
    calls = []
    real = AddRMSNormFunction.apply
    monkeypatch.setattr(AddRMSNormFunction, "apply", lambda *a: calls.append(1) or real(*a))
    ids = torch.randint(0, 256, (1, 24))
    results = []
    with parallel_context():
        model, _ = _tiny_model(tmp_path)
        gpt = model.module if hasattr(model, "module") else model
        for fused in (True, False):
            for layer, after_mlp in zip(gpt.decoder.layers, [*gpt.decoder.layers[1:], None]):
                layer.self_attn_bda.next_norm = layer.pre_mlp_layernorm if fused else None
                after = gpt.decoder.final_layernorm if after_mlp is None else after_mlp.input_layernorm
                layer.mlp_bda.next_norm = after if fused else None
            model.zero_grad()
            loss = model(ids, torch.arange(24)[None], None, labels=ids)
            loss.float().sum().backward()
            results.append((loss.detach().float(), {n: p.grad.float().clone() for n, p in model.named_parameters()}))
    assert len(calls) == 4  # two adds per layer, the second layer's into the final norm
    (loss, grads), (ref_loss, ref_grads) = results
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=2e-2)
    for name, ref in ref_grads.items():
        scale = ref.abs().max().item()
        torch.testing.assert_close(grads[name], ref, rtol=5e-2, atol=5e-2 * scale, msg=lambda m, n=name: f"{n}: {m}")


def test_bias_or_dropout_keep_megatrons_add():
    bda = ResidualIntoNorm()
    bda.next_norm = QuackableRMSNorm(4, eps=1e-5, kernel="torch")  # would not take the add anyway; never asked
    x, residual, bias = torch.ones(2, 4), torch.full((2, 4), 2.0), torch.full((4,), 0.5)
    torch.testing.assert_close(bda(True, False)((x, bias), residual, 0.0), torch.full((2, 4), 3.5))
    torch.testing.assert_close(bda(False, False)((x, None), residual, 0.5), torch.full((2, 4), 3.0))  # eval


@pytest.mark.gpu
@pytest.mark.skipif(not quack_runs_here(), reason="needs quack-kernels on a Hopper/Blackwell GPU")
def test_quack_add_rmsnorm_matches_torch_on_the_gpu():
    torch.manual_seed(0)
    shape = (8192, 1, 512)
    branch = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    residual = torch.randn(shape, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(512, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out, summed = AddRMSNormFunction.apply(branch, residual, weight, 1e-5)
    ref_summed = branch + residual
    ref_out = torch.nn.functional.rms_norm(ref_summed.float(), (512,), weight.float(), 1e-5).to(torch.bfloat16)
    d_out, d_sum = torch.randn_like(out), torch.randn_like(out)
    got = (out, summed, *torch.autograd.grad((out * d_out).sum() + (summed * d_sum).sum(), (branch, residual, weight)))
    ref = (ref_out, ref_summed,
           *torch.autograd.grad((ref_out * d_out).sum() + (ref_summed * d_sum).sum(), (branch, residual, weight)))
    for name, g, r in zip(("out", "sum", "d_branch", "d_residual", "d_weight"), got, ref):
        torch.testing.assert_close(g.float(), r.float(), rtol=2e-2, atol=2e-2 * r.float().abs().max().item(),
                                   msg=lambda m, n=name: f"{n}: {m}")
