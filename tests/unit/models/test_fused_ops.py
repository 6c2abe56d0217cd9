"""Fused weight-gradient accumulation without apex: values equal the unfused ``main_grad += grad.T @ input``."""

from __future__ import annotations

import pytest
import torch

from sft_bridge_port.models.fused_ops import install_grad_accum_fusion, wgrad_gemm_accum
from sft_bridge_port.models.tiny import make_tiny_hf_model


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_wgrad_gemm_accumulates_into_main_grad(in_dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4).to(in_dtype)  # [s, b, in] is flattened like megatron's prepared tensors
    g = torch.randn(2, 6, 3).to(in_dtype)
    main_grad = torch.ones(3, 4)
    wgrad_gemm_accum(x, g, main_grad)
    wgrad_gemm_accum(x, g, main_grad)  # accumulates, never overwrites
    expected = 1 + 2 * (g.reshape(-1, 3).float().t() @ x.reshape(-1, 4).float())
    tol = 1e-5 if in_dtype == torch.float32 else 2e-2
    torch.testing.assert_close(main_grad, expected, rtol=tol, atol=tol)
    assert main_grad.dtype == torch.float32


def test_install_makes_megatron_accept_the_switch():
    from megatron.core.tensor_parallel import layers

    assert install_grad_accum_fusion() is True
    assert layers._grad_accum_fusion_available
    kernel = layers.fused_weight_gradient_mlp_cuda.wgrad_gemm_accum_fp32
    main_grad = torch.zeros(2, 2)
    kernel(torch.eye(2), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), main_grad)
    torch.testing.assert_close(main_grad, torch.tensor([[1.0, 3.0], [2.0, 4.0]]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only error path")
def test_fusion_on_cpu_is_refused_with_the_field_name(tmp_path):
    from sft_bridge_port.models import get_provider
    from sft_bridge_port.utils.dist_context import parallel_context

    provider = get_provider(make_tiny_hf_model(tmp_path, "llama"), gradient_accumulation_fusion=True)
    with parallel_context(), pytest.raises(ValueError, match="gradient_accumulation_fusion"):
        provider.provide()
