"""GPU (bf16, megatron DDP) checks of the fusion switches: the same loss and main_grads as the unfused model.

The reference has ``cuda_fast_kernels=False`` (megatron-core's paths, eager RoPE and norms); each switch is then
checked alone, and ``{}`` is what users get by default (every fusion, compiled RoPE and RMSNorm)."""

from __future__ import annotations

import pytest
import torch
from megatron.core.distributed import DistributedDataParallelConfig

from sft_bridge_port.models import get_provider
from sft_bridge_port.models.tiny import make_tiny_hf_model
from sft_bridge_port.utils.dist_context import parallel_context
from sft_bridge_port.utils.dist_ckpt import unwrap

pytestmark = pytest.mark.gpu
SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}
FAST = {"linear_ce_chunk_tokens": 64, "gradient_accumulation_fusion": True, "bias_activation_fusion": True}
ALONE = {"cuda_fast_kernels": False}


def _loss_and_main_grads(hf_dir, state, ids, **overrides):
    provider = get_provider(hf_dir, bf16=True, params_dtype=torch.bfloat16, **overrides)
    ddp = DistributedDataParallelConfig(grad_reduce_in_fp32=True)
    model = provider.provide_distributed_model(ddp_config=ddp)[0]
    if state is not None:
        unwrap(model).load_state_dict(state, strict=False)  # state holds every tensor; _extra_state is None
    pos = torch.arange(ids.shape[1], device="cuda")[None].expand(ids.shape[0], -1)
    loss = model(ids, pos, None, labels=ids)
    loss.sum().backward()
    grads = {n: p.main_grad.clone() for n, p in unwrap(model).named_parameters()}
    state = {k: v.clone() for k, v in unwrap(model).state_dict().items() if isinstance(v, torch.Tensor)}
    return loss.detach(), grads, state


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize(
    "overrides",
    [{"linear_ce_chunk_tokens": 64, **ALONE}, {"gradient_accumulation_fusion": True, **ALONE}, {**FAST, **ALONE}, {},
     {**FAST, "linear_ce_keep_logits": True, **ALONE}],
)
def test_fusions_keep_loss_and_main_grads(tmp_path, tied, overrides):
    hf_dir = make_tiny_hf_model(tmp_path, "llama", tie_word_embeddings=tied, **SHAPE)
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (2, 200), device="cuda")
    with parallel_context():
        ref_loss, ref_grads, state = _loss_and_main_grads(hf_dir, None, ids, **ALONE)
    with parallel_context():
        loss, grads, _ = _loss_and_main_grads(hf_dir, state, ids, **overrides)
    assert loss.dtype == torch.float32 and loss.shape == (2, 200)
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=2e-2)
    for name, ref in ref_grads.items():
        scale = ref.abs().max().clamp_min(1e-3)
        torch.testing.assert_close(grads[name] / scale, ref / scale, rtol=0, atol=3e-2, msg=name)
