"""``sft-bridge-port demo --quick``: every stage runs end to end and leaves what the summary promises."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from sft_bridge_port import demo
from sft_bridge_port.demo_stages import DEMO_DATA_DIR, chat_prompt_ids, clear_previous, load_exported


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """Run the shortened demo once for the module: ``(exit code, stdout, output folder)``."""
    out = tmp_path_factory.mktemp("demo")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = demo.main(["--quick", "--out", str(out)])
    from sft_bridge_port.utils.dist_context import destroy_distributed

    destroy_distributed()
    return rc, buf.getvalue(), out


def test_every_stage_runs_and_prints(quick_run):
    rc, text, out = quick_run
    assert rc == 0
    for k in range(1, demo.NUM_STAGES + 1):
        assert f"[{k}/{demo.NUM_STAGES}]" in text
    assert f"user:      {demo.HELD_OUT_PROMPT}" in text
    for sub in ("hf_base", "megatron_base", "run/checkpoints", "hf_export"):
        assert (out / sub).is_dir(), sub


def test_summary_numbers(quick_run):
    _, text, out = quick_run
    summary = json.loads((out / demo.SUMMARY_FILE).read_text())
    assert summary["steps"] == demo.QUICK_STEPS
    for key in ("loss_first", "loss_last", "eval_loss", "tokens_per_s"):
        assert math.isfinite(summary[key]) and summary[key] > 0, key
    assert summary["loss_last"] < summary["loss_first"]  # four steps already lower the loss
    vocab = json.loads((out / "hf_base" / "config.json").read_text())["vocab_size"]
    assert summary["loss_first"] == pytest.approx(math.log(vocab), rel=0.1)  # random init: near-uniform
    assert isinstance(summary["reply"], str)
    assert summary["reference"] == "5 hours is 300 minutes."  # from validation.jsonl
    assert f"{summary['loss_first']:.3f} -> {summary['loss_last']:.3f}" in text
    assert summary["paths"]["metrics_jsonl"] in text and summary["paths"]["checkpoints"] in text


def test_metrics_jsonl_has_every_step(quick_run):
    _, _, out = quick_run
    records = demo.read_metrics(out / "run" / "metrics.jsonl")
    train = [r["iteration"] for r in records if r["kind"] == "train"]
    assert train == list(range(1, demo.QUICK_STEPS + 1))
    assert [r["iteration"] for r in records if r["kind"] == "valid"] == [demo.QUICK_STEPS]
    pytest.importorskip("matplotlib")
    assert (out / "run" / "loss_curve.png").stat().st_size > 0


def test_export_loads_in_transformers_and_was_trained(quick_run):
    _, _, out = quick_run
    from safetensors.torch import load_file

    model, tok = load_exported(out / "hf_export")
    ids = chat_prompt_ids(tok, demo.HELD_OUT_PROMPT).to(model.device)
    assert ids[0, 0].item() == tok.bos_token_id and (ids[0] == tok.bos_token_id).sum() == 1  # no doubled BOS
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()
    base = load_file(out / "hf_base" / "model.safetensors")
    exported = {k: v for k, v in model.state_dict().items() if k in base}
    assert set(exported) == set(base)
    changed = [k for k in base if not torch.equal(base[k], exported[k].cpu())]
    assert len(changed) == len(base)  # full SFT: every weight moved


def test_held_out_prompt_is_not_trained_on():
    train = (DEMO_DATA_DIR / "training.jsonl").read_text()
    assert json.dumps(demo.HELD_OUT_PROMPT) not in train
    assert json.dumps(demo.HELD_OUT_PROMPT) in (DEMO_DATA_DIR / "validation.jsonl").read_text()


def test_summarize_metrics_worked_example():
    records = [
        {"kind": "train", "iteration": 1, "lm loss": 6.0, "tokens_per_s": 50.0, "step_time_s": 2.0},
        {"kind": "train", "iteration": 2, "lm loss": 3.0, "tokens_per_s": 100.0, "step_time_s": 1.0},
        {"kind": "train", "iteration": 3, "lm loss": 3.0, "tokens_per_s": 400.0, "step_time_s": 0.5},
        {"kind": "valid", "iteration": 3, "lm loss": 3.5},
    ]
    got = demo.summarize_metrics(records)
    assert got == {"steps": 3, "loss_first": 6.0, "loss_last": 3.0, "loss_drop_pct": 50.0, "eval_loss": 3.5,
                   "tokens_per_s": pytest.approx(300.0 / 1.5)}
    with pytest.raises(ValueError, match="no training records"):
        demo.summarize_metrics(records[3:])


def test_arguments():
    assert demo.parse_args(["--quick"]).steps == demo.QUICK_STEPS
    assert demo.parse_args([]).steps == demo.DEFAULT_STEPS
    assert demo.parse_args(["--steps", "7", "--quick"]).steps == 7
    with pytest.raises(SystemExit):
        demo.parse_args(["--steps", "1"])
    with pytest.raises(SystemExit):
        demo.parse_args(["--out", str(DEMO_DATA_DIR / "training.jsonl")])
    assert demo.eval_interval(100) == 25 and demo.eval_interval(4) == 4


def test_rerun_removes_only_the_demo_folders(tmp_path):
    for name in ("run", "hf_export", "mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text("x")
    (tmp_path / demo.SUMMARY_FILE).write_text("{}")
    assert sorted(clear_previous(tmp_path, demo.OUTPUT_DIRS)) == sorted(["run", "hf_export", demo.SUMMARY_FILE])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
