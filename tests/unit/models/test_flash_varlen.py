"""The direct flash path gives varlen_attn's exact values (GPU) and is only taken where torch's kernels fit (CPU)."""

import pytest
import torch

from sft_bridge_port.models.flash_varlen import direct_flash_supported, flash_varlen


def test_this_torch_offers_the_direct_kernels():
    # CI's torch: the schemas carry scale and window keywords, so SDPAttention skips varlen_attn's custom ops.
    assert direct_flash_supported()


def _inputs(t: int, heads: int, kv: int, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    make = lambda n: torch.randn(t, n, 64, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()  # noqa: E731
    return make(heads), make(kv), make(kv)


@pytest.mark.gpu
@pytest.mark.parametrize("left", [None, 7])
def test_direct_path_equals_varlen_attn_bit_for_bit(left):
    from torch.nn.attention.varlen import varlen_attn

    from sft_bridge_port.models.attention import _varlen_kwargs

    names = _varlen_kwargs() or frozenset()
    kwargs = {"enable_gqa": True} if "enable_gqa" in names else {}  # torch 2.11 takes GQA without the flag
    if "window_size" in names:
        kwargs["window_size"] = (-1, 0) if left is None else (left, 0)
    elif left is None:
        kwargs["is_causal"] = True
    else:
        pytest.skip("this torch's varlen_attn has no sliding window")
    q, k, v = _inputs(50, 8, 2)
    cu = torch.tensor([0, 13, 40, 50], dtype=torch.int32, device="cuda")
    grad = torch.randn_like(q)
    results = []
    for fn in (lambda: varlen_attn(q, k, v, cu, cu, 27, 27, **kwargs),
               lambda: flash_varlen(q, k, v, cu, cu, 27, 27, None, left)):
        out = fn()
        results.append((out, *torch.autograd.grad(out, (q, k, v), grad)))
    for ref, got in zip(*results):
        assert torch.equal(ref, got)


@pytest.mark.gpu
def test_fewer_queries_than_keys_align_to_the_end_like_per_document_sdpa():
    # Context parallelism's shape: each document's 4 local queries are its last 4 positions among 10 keys.
    q, _, _ = _inputs(8, 4, 4, seed=1)
    _, k, v = _inputs(20, 4, 4, seed=2)
    cu_q = torch.tensor([0, 4, 8], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, 10, 20], dtype=torch.int32, device="cuda")
    out = flash_varlen(q, k, v, cu_q, cu_k, 4, 10)
    for doc in range(2):
        qd = q[4 * doc : 4 * doc + 4].transpose(0, 1)[None].float()
        kd, vd = (x[10 * doc : 10 * doc + 10].transpose(0, 1)[None].float() for x in (k, v))
        mask = torch.ones(4, 10, dtype=torch.bool, device="cuda").tril(diagonal=6)
        ref = torch.nn.functional.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask)[0].transpose(0, 1)
        torch.testing.assert_close(out[4 * doc : 4 * doc + 4].float(), ref, rtol=2e-2, atol=2e-2)
