"""Compare each layout's per-step lm loss and grad norm with its reference run; JSON + markdown report.

Differences are reported both absolute and relative (``|a - b| / |b|``, maximum over the compared steps); a row
passes when both relative maxima are within the precision's tolerance. Example::

    ref:  loss [2.0, 1.5]   dp2: loss [2.0, 1.50003]   ->  max |Δloss| = 3e-5, relative 2e-5 (fp32 passes, tol 1e-4)
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Relative tolerances: fp32 differs only by the order of reductions; bf16 mixed precision rounds activations and
# the collectives' partial sums to 8 bits of mantissa, so layouts drift apart by up to about a percent in 20 steps.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"loss": 1e-4, "grad_norm": 1e-4},
    "bf16": {"loss": 2e-2, "grad_norm": 5e-2},
}


def _max_diffs(ref: list[float], got: list[float]) -> tuple[float, float]:
    abs_d = [abs(a - b) for a, b in zip(got, ref)]
    rel_d = [d / abs(b) if b else math.inf for d, b in zip(abs_d, ref)]
    return max(abs_d, default=math.nan), max(rel_d, default=math.nan)


def compare_run(run: dict[str, Any], ref: dict[str, Any] | None, first_step: int = 1) -> dict[str, Any]:
    """One table row: ``run`` against ``ref`` over iterations ``>= first_step`` present in both."""
    tol = TOLERANCES[run["precision"]]
    row: dict[str, Any] = {"config": run["config"], "precision": run["precision"], "status": run["status"],
                           "reference": ref["config"] if ref else None, "tolerance_rel": tol}
    if run["status"] != "ok":
        row.update(passed=None, message=run.get("message", ""))
        return row
    if ref is None or ref.get("status") != "ok":
        row.update(passed=False, message="reference run missing or failed")
        return row
    ref_by_step = {s["iteration"]: s for s in ref["steps"]}
    steps = [s for s in run["steps"] if s["iteration"] >= first_step and s["iteration"] in ref_by_step]
    pairs = [(s, ref_by_step[s["iteration"]]) for s in steps]
    dl, rl = _max_diffs([r["lm loss"] for _, r in pairs], [s["lm loss"] for s, _ in pairs])
    dg, rg = _max_diffs([r["grad_norm"] for _, r in pairs], [s["grad_norm"] for s, _ in pairs])
    expected = len([s for s in ref["steps"] if s["iteration"] >= first_step])
    passed = bool(pairs) and len(pairs) == expected and rl <= tol["loss"] and rg <= tol["grad_norm"]
    row.update(steps_compared=[s["iteration"] for s, _ in pairs], max_abs_dloss=dl, max_rel_dloss=rl,
               max_abs_dgrad_norm=dg, max_rel_dgrad_norm=rg, passed=passed)
    return row


def build_report(results: dict[tuple[str, str], dict[str, Any]], layouts: dict[str, Any], steps: int) -> list[dict]:
    """Rows for every (precision, config) result that has a reference, in ``layouts`` order."""
    rows = []
    for (precision, name), run in sorted(results.items(), key=lambda kv: (kv[0][0], list(layouts).index(kv[0][1]))):
        lay = layouts[name]
        if lay.reference is None:
            continue
        ref = results.get((precision, lay.reference))
        first = steps // 2 + 1 if lay.resume_from else 1
        row = compare_run(run, ref, first)
        row["description"] = lay.description
        rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3e}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The report as a markdown table (one line per row)."""
    lines = ["| precision | config | vs | max abs Δloss | max rel Δloss | max abs Δgrad-norm | max rel Δgrad-norm "
             "| tolerance (rel: loss / grad norm) | result |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        tol = f"{r['tolerance_rel']['loss']:.0e} / {r['tolerance_rel']['grad_norm']:.0e}"
        if r["status"] == "ok":
            verdict = "pass" if r["passed"] else "FAIL"
        else:
            verdict = f"{r['status']}: {r.get('message', '')}".replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['precision']} | {r['config']} ({r['description']}) | {r['reference']} "
                     f"| {_fmt(r.get('max_abs_dloss'))} | {_fmt(r.get('max_rel_dloss'))} "
                     f"| {_fmt(r.get('max_abs_dgrad_norm'))} | {_fmt(r.get('max_rel_dgrad_norm'))} | {tol} | {verdict} |")
    return "\n".join(lines) + "\n"


def load_results(work: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every ``runs/<precision>-<name>/result.json`` under ``work``, keyed by ``(precision, name)``."""
    out = {}
    for path in sorted((work / "runs").glob("*/result.json")):
        run = json.loads(path.read_text())
        out[(run["precision"], run["config"])] = run
    return out
