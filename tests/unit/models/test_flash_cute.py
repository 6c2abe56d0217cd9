"""Flash-attention 4 is chosen only where it may and can run, refused clearly where it cannot, and (GPU, when
installed) gives the values of PyTorch's FA2 path for every shape SDPAttention passes it."""

import pytest
import torch
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig

from sft_bridge_port.models import attention, flash_cute
from sft_bridge_port.models.attention import SDPAttention


def _core(kernel: str) -> SDPAttention:
    cfg = TransformerConfig(
        num_layers=1, hidden_size=64, num_attention_heads=4, num_query_groups=2, attention_dropout=0.0
    )
    cfg.attention_kernel = kernel
    return SDPAttention(cfg, 1, AttnMaskType.causal)


@pytest.mark.parametrize(("kernel", "runs_here", "expected"), [
    ("auto", True, True), ("auto", False, False), ("fa4", True, True), ("fa2", True, False), ("fa2", False, False),
])  # fmt: skip
def test_kernel_choice_follows_the_config_and_what_runs(monkeypatch, kernel, runs_here, expected):
    calls = []
    monkeypatch.setattr(attention, "cute_supported", lambda q, dv: calls.append(dv) or runs_here)
    q = torch.zeros(flash_cute.AUTO_MIN_TOKENS, 4, 16)
    assert _core(kernel)._use_cute(q, torch.zeros(3, 2, 16)) is expected
    assert calls == ([] if kernel == "fa2" else [16])  # "fa2" never asks


def test_auto_keeps_fa2_below_the_token_floor_where_fa4_launches_cost_more_than_they_save(monkeypatch):
    monkeypatch.setattr(attention, "cute_supported", lambda q, dv: True)
    small = torch.zeros(flash_cute.AUTO_MIN_TOKENS - 1, 4, 16)
    assert not _core("auto")._use_cute(small, small)
    assert _core("fa4")._use_cute(small, small)  # asked for explicitly: any size


def test_fa4_where_it_cannot_run_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(attention, "cute_supported", lambda q, dv: False)
    with pytest.raises(RuntimeError, match="attention_kernel='fa4'.*head dim 16.*attention_kernel='auto'"):
        _core("fa4")._use_cute(torch.zeros(3, 4, 16), torch.zeros(3, 2, 16))


def test_cpu_tensors_never_take_fa4():
    assert not flash_cute.cute_supported(torch.zeros(3, 4, 64, dtype=torch.bfloat16), 64)


def _cuda_hopper_with_fa4() -> bool:
    return torch.cuda.is_available() and flash_cute.cute_supported(
        torch.zeros(1, 1, 64, device="cuda", dtype=torch.bfloat16), 64
    )


needs_fa4 = pytest.mark.skipif(not _cuda_hopper_with_fa4(), reason="needs flash-attn-4 on a Hopper/Blackwell GPU")


def _qkv(t_q: int, t_k: int, heads: int, kv: int, dim: int, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda t, n: torch.randn(t, n, dim, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()  # noqa: E731
    return make(t_q, heads), make(t_k, kv), make(t_k, kv)


@pytest.mark.gpu
@needs_fa4
@pytest.mark.parametrize(("dim", "heads", "kv", "left"), [(64, 32, 8, None), (128, 8, 2, None), (64, 8, 8, 37)])
def test_fa4_matches_fa2_values_and_grads(dim, heads, kv, left):
    from sft_bridge_port.models.flash_varlen import flash_varlen

    lengths = [700, 1, 129, 3000, 266]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    q, k, v = _qkv(sum(lengths), sum(lengths), heads, kv, dim, seed=dim + heads)
    grad = torch.randn_like(q)
    results = []
    for fn in (flash_varlen, flash_cute.cute_varlen):
        out = fn(q, k, v, cu, cu, 3072, 3072, None, left)
        results.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    for name, ref, got in zip(("out", "dq", "dk", "dv"), *results):
        err = (got.float() - ref.float()).abs().max().item()
        assert err <= 2e-2 * ref.float().abs().max().item(), f"{name}: max |fa4 - fa2| = {err}"


@pytest.mark.gpu
@needs_fa4
def test_fa4_aligns_fewer_queries_to_the_end_of_each_document_like_fa2():
    # Context parallelism's shape: the local queries of each document are its last positions among the keys.
    from sft_bridge_port.models.flash_varlen import flash_varlen

    q, _, _ = _qkv(96, 96, 8, 2, 64, seed=1)
    _, k, v = _qkv(320, 320, 8, 2, 64, seed=2)
    cu_q = torch.tensor([0, 32, 96], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, 128, 320], dtype=torch.int32, device="cuda")
    ref = flash_varlen(q, k, v, cu_q, cu_k, 64, 192)
    got = flash_cute.cute_varlen(q, k, v, cu_q, cu_k, 64, 192)
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=2e-2)
