"""The fusion variants of the harness run on CPU (chunked linear CE) and the HF fp32-master baseline builds."""

from __future__ import annotations

from bench.throughput import main


def test_linear_ce_variant_and_hf_fp32_master_run():
    rows = main(["--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1", "--micro-batches", "1",
                 "--systems", "ours:lce", "--baseline", "hf:fp32master"])
    systems = {r["system"]: r for r in rows if "system" in r}
    assert set(systems) == {"ours:lce", "hf:fp32master"}
    assert not any("error" in r for r in systems.values()), systems
    assert all(r["tokens_per_s"] > 0 for r in systems.values())


def test_ab_variants_run_and_are_undone_when_the_system_closes():
    from sft_bridge_port.models import attention
    from sft_bridge_port.training import batch, losses

    def switches():
        return losses.deferred_loss_checks, batch._to, attention.apply_rotary_pair_fused, attention.direct_flash_supported

    before = switches()
    rows = main(["--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1", "--micro-batches", "2",
                 "--systems", "ours:sync_nan+pageable+eager_rope+varlen_op", "--baseline", "none"])
    assert "error" not in rows[0] and rows[0]["tokens_per_s"] > 0, rows
    assert switches() == before


def test_round4_variants_run_and_unknown_variants_are_refused():
    import pytest

    rows = main(["--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1", "--micro-batches", "1",
                 "--systems", "ours:pure+keeplogits+lce", "--baseline", "none"])
    assert "error" not in rows[0] and rows[0]["tokens_per_s"] > 0, rows
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['keeplogit'\]"):
        main(["--model", "tiny", "--seq", "128", "--steps", "1", "--systems", "ours:keeplogit", "--baseline", "none"])


def test_round7_variants_run_and_are_undone():
    from sft_bridge_port.models import provider, quack_ce

    def switches():
        return quack_ce.head_logits, quack_ce.head_wgrad, provider.link_residual_norms

    before = switches()
    rows = main(["--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1", "--micro-batches", "1",
                 "--systems", "ours:torchce+mcore_add+cublas_head", "--baseline", "none"])
    assert "error" not in rows[0] and rows[0]["tokens_per_s"] > 0, rows
    assert switches() == before
