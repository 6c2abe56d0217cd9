"""The megatron model built by our provider + fast spec computes what the HF model computes (CPU, fp32).

Same weights in both (copied with a small inline mapping), so matching logits prove RoPE (incl. llama3
scaling with non-default factors), RMSNorm, GQA, QKV bias, QK-norm, sliding window and tied embeddings.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams

from sft_bridge_port.models.tiny import FAMILIES, make_tiny_hf_model
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import build_twins

VOCAB = 200  # padded to 256 by the provider: exercises vocab padding
CASES = {family: {} for family in FAMILIES}
CASES["mistral"] = {"sliding_window": 8}  # shorter than the test sequence: the window really restricts


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {fam: make_tiny_hf_model(root / fam, fam, vocab_size=VOCAB, seed=1, **kw) for fam, kw in CASES.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_loss_and_param_count_match_hf(hf_dirs, family):
    torch.manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 24))
    pos = torch.arange(24).expand(2, 24)
    with parallel_context():
        hf, model, provider = build_twins(hf_dirs[family])
        n_mcore = sum(p.numel() for p in model.parameters())
        padding_rows = provider.padded_vocab_size() - VOCAB
        tied = provider.share_embeddings_and_output_weights
        assert n_mcore - padding_rows * provider.hidden_size * (1 if tied else 2) == hf.num_parameters()
        with torch.no_grad():
            ref = hf(input_ids=ids).logits  # [b, s, V]
            logits = model(ids, pos, None)[..., :VOCAB]
            loss = model(ids, pos, None, labels=ids)
    cos = F.cosine_similarity(logits.flatten(), ref.flatten(), dim=0)
    assert cos >= 0.9999, f"{family}: cosine {cos.item()}"
    torch.testing.assert_close(logits, ref, atol=2e-4, rtol=1e-3)
    assert loss.shape == (2, 24) and loss.dtype == torch.float32 and torch.isfinite(loss).all()


def test_llama3_rope_frequencies_equal_hf(hf_dirs):
    with parallel_context():
        hf, model, provider = build_twins(hf_dirs["llama"])
    assert provider.rope_scaling_original_max_position_embeddings == 128  # not megatron's hard-coded 8192
    torch.testing.assert_close(model.rotary_pos_emb.inv_freq, hf.model.rotary_emb.inv_freq.float(), rtol=0, atol=0)


@pytest.mark.parametrize("family", ["llama", "qwen3", "mistral"])
def test_packed_equals_unpacked(hf_dirs, family):
    """Packed THD batch (cu_seqlens) gives each sample the loss it gets alone: no cross-sample attention."""
    torch.manual_seed(0)
    lengths = [5, 11, 3]
    samples = [torch.randint(0, VOCAB, (1, n)) for n in lengths]
    with parallel_context():
        _, model, _ = build_twins(hf_dirs[family])
        with torch.no_grad():
            alone = [model(s, torch.arange(s.shape[1])[None], None, labels=s) for s in samples]
            ids = torch.cat(samples, dim=1)
            pos = torch.cat([torch.arange(n) for n in lengths])[None]
            cu = torch.tensor([0, 5, 16, 19], dtype=torch.int32)
            psp = PackedSeqParams(
                qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=11, max_seqlen_kv=11
            )
            packed = model(ids, pos, None, labels=ids, packed_seq_params=psp)
    assert packed.shape == (1, 19)
    torch.testing.assert_close(packed, torch.cat(alone, dim=1), atol=1e-5, rtol=1e-5)
