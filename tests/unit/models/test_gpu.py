"""GPU (bf16) checks of the fast spec: varlen packed path, and agreement with megatron-core's local spec."""

from __future__ import annotations

import pytest
import torch
from megatron.core.packed_seq_params import PackedSeqParams

from sft_bridge_port.models.layer_spec import local_block_spec
from sft_bridge_port.models.tiny import make_tiny_hf_model
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import build_twins

pytestmark = pytest.mark.gpu
GPU_SHAPE = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2}


def _loss(model, ids, psp=None):
    pos = torch.arange(ids.shape[1], device=ids.device)[None]
    return model(ids, pos, None, labels=ids, packed_seq_params=psp)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_bf16_packed_varlen_and_local_spec_agree(tmp_path, family):
    hf_dir = make_tiny_hf_model(tmp_path, family, **GPU_SHAPE, **({"head_dim": 64} if family == "qwen3" else {}))
    overrides = {"bf16": True, "params_dtype": torch.bfloat16, "use_cpu_initialization": False}
    torch.manual_seed(0)
    lengths = [37, 120, 64]
    samples = [torch.randint(0, 256, (1, n), device="cuda") for n in lengths]
    with parallel_context():
        _, fast, _ = build_twins(hf_dir, **overrides)
        _, local, _ = build_twins(hf_dir, transformer_layer_spec=local_block_spec, **overrides)
        fast, local = fast.cuda(), local.cuda()
        with torch.no_grad():
            alone = torch.cat([_loss(fast, s) for s in samples], dim=1)
            alone_local = torch.cat([_loss(local, s) for s in samples], dim=1)
            cu = torch.tensor([0, 37, 157, 221], dtype=torch.int32, device="cuda")
            psp = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=120,
                                  max_seqlen_kv=120)
            ids = torch.cat(samples, dim=1)
            pos = torch.cat([torch.arange(n) for n in lengths])[None].cuda()
            packed = fast(ids, pos, None, labels=ids, packed_seq_params=psp)
        loss = fast(ids, pos, None, labels=ids, packed_seq_params=psp)
        loss.mean().backward()
    assert packed.dtype == torch.float32 and torch.isfinite(packed).all()
    torch.testing.assert_close(packed, alone, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(alone, alone_local, atol=3e-2, rtol=3e-2)
    assert all(torch.isfinite(p.main_grad if hasattr(p, "main_grad") else p.grad).all()
               for p in fast.parameters() if p.requires_grad)
