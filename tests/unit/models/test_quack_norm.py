"""RMSNorm keeps torch's module and values: quack's kernels only where they run (GPU test when installed)."""

import pytest
import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from sft_bridge_port.models import quack_norm
from sft_bridge_port.models.layer_spec import TorchNorm
from sft_bridge_port.models.quack_norm import QuackableRMSNorm


def _norm(kernel: str) -> torch.nn.Module:
    cfg = TransformerConfig(num_layers=1, hidden_size=64, num_attention_heads=4, normalization="RMSNorm")
    cfg.norm_kernel = kernel
    return TorchNorm(cfg, 64, eps=1e-5)


def test_norm_module_and_state_dict_are_torchs_whatever_the_kernel():
    auto, torch_only = _norm("auto"), _norm("torch")
    assert type(auto) is QuackableRMSNorm and isinstance(auto, torch.nn.RMSNorm)
    assert type(torch_only) is torch.nn.RMSNorm
    assert auto.state_dict().keys() == torch_only.state_dict().keys() == {"weight"}
    x = torch.randn(5, 64)
    torch.testing.assert_close(auto(x), torch_only(x), rtol=0, atol=0)  # CPU: torch's kernel


def test_auto_uses_quack_only_from_the_token_floor(monkeypatch):
    from sft_bridge_port.models.flash_cute import AUTO_MIN_TOKENS

    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    monkeypatch.setattr(quack_norm, "cute_arch", lambda x: 9)
    norm = QuackableRMSNorm(64, eps=1e-5)
    assert norm._quack_runs(torch.zeros(AUTO_MIN_TOKENS, 64, dtype=torch.bfloat16))
    assert not norm._quack_runs(torch.zeros(AUTO_MIN_TOKENS - 1, 64, dtype=torch.bfloat16))
    assert not norm._quack_runs(torch.zeros(AUTO_MIN_TOKENS, 64))  # fp32 activations: torch's kernel


def test_quack_required_where_it_cannot_run_is_an_error():
    with pytest.raises(RuntimeError, match="norm_kernel='quack'.*device cpu.*norm_kernel='auto'"):
        _norm("quack")(torch.randn(5, 64))


def _quack_runs_here() -> bool:
    if not torch.cuda.is_available():
        return False
    norm = QuackableRMSNorm(64, eps=1e-5, kernel="quack").cuda().bfloat16()
    try:
        return norm._quack_runs(torch.zeros(1, 64, device="cuda", dtype=torch.bfloat16))
    except RuntimeError:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _quack_runs_here(), reason="needs quack-kernels on a Hopper/Blackwell GPU")
@pytest.mark.parametrize("shape", [(4096, 2048), (1000, 2, 8, 128)])  # a hidden state; Qwen3's per-head q/k norm
def test_quack_rmsnorm_matches_torch_values_and_grads(shape):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    grad = torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g)
    weight = torch.rand(shape[-1], generator=g, device="cuda") + 0.5
    results = []
    for kernel in ("torch", "quack"):
        norm = QuackableRMSNorm(shape[-1], eps=1e-5, kernel=kernel).cuda().bfloat16()
        with torch.no_grad():
            norm.weight.copy_(weight)
        out = norm(x)
        results.append((out, *torch.autograd.grad(out, (x, norm.weight), grad)))
    for name, ref, got in zip(("out", "dx", "dweight"), *results):
        torch.testing.assert_close(got.float(), ref.float(), rtol=2e-2, atol=2e-2 * ref.float().abs().max().item(),
                                   msg=lambda m, n=name: f"{n}: {m}")
