"""DP=2, TP=2 (+SP), PP=2, DP=2 + distributed optimizer, and a TP=2 -> PP=2 resume train like one process.

The CPU part of ``tests/distributed/equivalence.py``: a tiny Llama on the packed demo chats, fp32, gloo, two
torchrun processes (all 2-process layouts one after another in one process group) beside the single-process
reference. Per-step lm loss and grad norm must agree to 1e-4 relative (they agree to ~1e-7: only the order of
reductions differs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.compare import TOLERANCES, build_report, load_results
from tests.distributed.runs import LAYOUTS
from tests.unit.torchrun import repo_pythonpath

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "tests" / "distributed" / "equivalence.py"
STEPS = 6
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TWO_PROC = ("dp2", "tp2_sp", "pp2", "dp2_distopt", "resume_pp2")


def _start(args: list[str], log: Path) -> tuple[subprocess.Popen, object]:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}  # set by the in-process prepare's world of one
    env.update(PYTHONPATH=repo_pythonpath(), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    out = open(log, "w")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True), out


def _wait(proc: subprocess.Popen, out, log: Path, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the torchrun workers too, not only the launcher
        proc.wait()
    out.close()
    assert proc.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from sft_bridge_port.utils.dist_context import destroy_distributed
    from tests.distributed.runs import prepare

    work = tmp_path_factory.mktemp("equivalence")
    prepare(work, "tiny", pack_variants=((1, False), (1, True)))
    destroy_distributed()
    common = ["worker", "--work", str(work), "--size", "tiny", "--steps", str(STEPS)]
    ref = _start([str(SCRIPT), *common, "--config", "ref"], work / "ref.log")
    two = _start(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(SCRIPT), *common,
                  *[x for c in TWO_PROC for x in ("--config", c)]], work / "two.log")
    _wait(*ref, work / "ref.log", 600)
    _wait(*two, work / "two.log", 600)
    results = load_results(work)
    return results, {r["config"]: r for r in build_report(results, LAYOUTS, STEPS)}


def test_reference_trains(report):
    results, _ = report
    ref = results[("fp32", "ref")]
    losses = [s["lm loss"] for s in ref["steps"]]
    assert [s["iteration"] for s in ref["steps"]] == list(range(1, STEPS + 1))
    assert losses[-1] < losses[0] - 0.05  # the comparison below is between runs that really learn


@pytest.mark.parametrize("name", ["dp2", "tp2_sp", "pp2", "dp2_distopt"])
def test_layout_matches_single_process(report, name):
    _, rows = report
    row = rows[name]
    assert row["status"] == "ok", row.get("message")
    assert row["steps_compared"] == list(range(1, STEPS + 1))
    assert row["max_rel_dloss"] <= TOLERANCES["fp32"]["loss"], row
    assert row["max_rel_dgrad_norm"] <= TOLERANCES["fp32"]["grad_norm"], row
    assert row["passed"]


def test_resume_at_another_layout_continues_the_run(report):
    results, rows = report
    row = rows["resume_pp2"]
    assert row["status"] == "ok", row.get("message")
    assert row["steps_compared"] == list(range(STEPS // 2 + 1, STEPS + 1))
    assert row["passed"], row
    # the resumed run starts from the saved state, not from the pretrained weights
    first = results[("fp32", "resume_pp2")]["steps"][0]
    assert first["iteration"] == STEPS // 2 + 1
    assert abs(first["lm loss"] - results[("fp32", "ref")]["steps"][0]["lm loss"]) > 1e-3
