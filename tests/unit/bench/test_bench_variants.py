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
