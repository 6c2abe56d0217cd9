"""The vectorised optimizer fallbacks compute what megatron-core's per-tensor fallbacks compute."""

import torch
from megatron.core.utils import local_multi_tensor_l2_norm, local_multi_tensor_scale

from sft_bridge_port.training.torch_kernels import foreach_l2_norm, foreach_scale, install_foreach_fallbacks


def _tensors(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for shape in [(7,), (3, 5), (2, 2, 4), (1,)]]


def test_l2_norm_matches_megatron_fallback():
    ts = _tensors()
    ours, _ = foreach_l2_norm(0, None, [ts], False)
    expected = torch.linalg.vector_norm(torch.cat([t.flatten() for t in ts]))
    assert ours.shape == (1,)
    torch.testing.assert_close(ours[0], expected)
    theirs, _ = local_multi_tensor_l2_norm(0, None, [ts], False) if torch.cuda.is_available() else (expected.view(1), None)
    torch.testing.assert_close(ours.cpu(), theirs.cpu().float())


def test_scale_in_place_and_out_of_place_match_megatron_fallback():
    src, dst = _tensors(1), [torch.zeros_like(t) for t in _tensors(1)]
    foreach_scale(0, None, [src, dst], 0.25)
    ref = [torch.zeros_like(t) for t in src]
    local_multi_tensor_scale(0, None, [src, ref], 0.25)
    for a, b in zip(dst, ref):
        assert torch.equal(a, b)
    grads = _tensors(2)
    before = [t.clone() for t in grads]
    foreach_scale(0, None, [grads, grads], 0.5)
    for a, b in zip(grads, before):
        assert torch.equal(a, b * 0.5)


def test_install_replaces_only_megatrons_local_fallback():
    import megatron.core.optimizer.clip_grads as clip_grads

    assert install_foreach_fallbacks()
    assert clip_grads.l2_norm_impl is foreach_l2_norm
    assert clip_grads.multi_tensor_scale_impl is foreach_scale
    assert install_foreach_fallbacks()  # idempotent
