"""The benchmark cannot rot: its FLOP formula on hand-computed numbers, its packed stream, and a CPU run."""

from __future__ import annotations

import json

import pytest
import torch

from bench.flops import Dims, matmul_params, mfu, step_flops
from bench.stream import make_packs
from bench.throughput import main, model_config

TOY = Dims(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, ffn=16, vocab=10)


def test_flop_formula_on_hand_computed_numbers():
    # per layer: attention 8*4*(2+2) + 2*4*8 = 192, gated MLP 3*8*16 = 384; 2 layers + LM head 8*10
    assert matmul_params(TOY) == 2 * (192 + 384) + 80 == 1232
    attention = 6 * 2 * (2 * 4) * (3**2 + 5**2)  # 6 * L * heads*head_dim * sum s_i^2 = 3264
    assert step_flops(TOY, [3, 5]) == 6 * 1232 * 8 + attention == 62400
    assert step_flops(TOY, [3, 5], mode="lora") == 4 * 1232 * 8 + attention == 42688
    assert mfu(494.5e12) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mode"):
        step_flops(TOY, [3], mode="dpo")


def test_llama32_1b_matmul_params_match_the_training_engine_count():
    from sft_bridge_port.models import get_provider
    from sft_bridge_port.training.flops import matmul_params as engine_count

    cfg = model_config("llama32_1b")
    assert matmul_params(Dims.from_hf(cfg)) == 1_235_746_816
    provider = get_provider("meta-llama/Llama-3.2-1B")
    provider.finalize()
    assert engine_count(provider, cfg["vocab_size"]) == 1_235_746_816


def test_packed_stream_is_full_deterministic_and_document_causal():
    packs = make_packs(3, 512, vocab=100, seed=0)
    again = make_packs(3, 512, vocab=100, seed=0)
    for p, q in zip(packs, again):
        assert sum(p.lengths) == 512 and p.lengths == q.lengths and torch.equal(p.tokens, q.tokens)
        batch = p.bridge_batch()
        cu = batch["cu_seqlens"][0].tolist()
        assert cu[0] == 0 and cu[-1] == 512 and len(cu) == len(p.lengths) + 1
        pos = batch["position_ids"][0]
        assert (pos[torch.tensor(cu[:-1])] == 0).all()  # positions restart at every document
        assert int(batch["max_seqlen"]) == max(p.lengths) and int(batch["cu_seqlens_argmin"]) == len(cu)
    assert sum(len(p.lengths) for p in packs) > 3  # several documents per pack (lengths ~ log-normal, median 400)


def test_harness_runs_both_systems_on_cpu(tmp_path):
    out = tmp_path / "r.json"
    rows = main(["--model", "tiny", "--seq", "256", "--steps", "1", "--warmup", "1", "--micro-batches", "2",
                 "--systems", "ours", "--baseline", "hf", "--out", str(out)])
    systems = {r["system"]: r for r in rows if "system" in r}
    assert set(systems) == {"ours", "hf"} and not any("error" in r for r in systems.values())
    for r in systems.values():
        assert r["tokens_per_s"] > 0 and r["ms_per_step"] > 0 and r["mfu"] >= 0
        assert r["n_trainable"] > 0
    assert systems["ours"]["docs_per_pack"] == systems["hf"]["docs_per_pack"]  # same packed stream
    ratio = next(r for r in rows if "ratio" in r)
    assert ratio["ratio"] == "ours/hf"
    assert ratio["tokens_per_s"] == pytest.approx(systems["ours"]["tokens_per_s"] / systems["hf"]["tokens_per_s"], rel=1e-2)
    saved = json.loads(out.read_text())
    assert saved["env"]["gpu"] == "cpu" and "torch" in saved["env"] and len(saved["rows"]) == 3


def test_harness_lora_mode_trains_only_adapters():
    rows = main(["--model", "tiny", "--mode", "lora", "--seq", "128", "--steps", "1", "--warmup", "1",
                 "--micro-batches", "1", "--systems", "ours", "--baseline", "none"])
    (row,) = rows
    assert "error" not in row and 0 < row["n_trainable"] < 90_000


def test_joined_packs_keep_their_documents_and_hf_gets_the_same_rows():
    from bench.stream import join_packs, stack_packs

    a, b = make_packs(2, 256, vocab=50, seed=3)
    joined = join_packs([a, b]).bridge_batch()
    cu = joined["cu_seqlens"][0].tolist()
    assert joined["tokens"].shape == (1, 512) and cu[-1] == 512
    assert [y - x for x, y in zip(cu[:-1], cu[1:])] == a.lengths + b.lengths  # no document crosses the join
    ids, pos = stack_packs([a, b])
    assert torch.equal(ids.reshape(1, -1), joined["tokens"]) and torch.equal(pos.reshape(1, -1), joined["position_ids"])


def test_packs_per_micro_batch_counts_every_pack_once():
    rows = main(["--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1", "--micro-batches", "2",
                 "--packs-per-micro-batch", "2", "--systems", "ours", "--baseline", "hf"])
    systems = {r["system"]: r for r in rows if "system" in r}
    assert not any("error" in r for r in systems.values()), systems
    for r in systems.values():
        assert r["packs_per_step"] == 4 and r["packs_per_micro_batch"] == 2 and r["gpus"] == 1
        assert r["tokens_per_s"] == pytest.approx(4 * 128 / (r["ms_per_step"] / 1e3), rel=1e-2)


def test_data_parallel_run_under_torchrun(tmp_path):
    from tests.unit.torchrun import run_torchrun

    out = tmp_path / "dp.json"
    run_torchrun("bench.throughput", "--model", "tiny", "--seq", "128", "--steps", "1", "--warmup", "1",
                 "--micro-batches", "2", "--systems", "ours:distopt+overlap", "--baseline", "none", "--out", str(out))
    (row,) = json.loads(out.read_text())["rows"]
    assert "error" not in row, row
    assert row["gpus"] == 2 and row["packs_per_step"] == 4  # 2 micro-batches on each of 2 ranks
    assert row["tokens_per_s"] == pytest.approx(4 * 128 / (row["ms_per_step"] / 1e3), rel=1e-2)
