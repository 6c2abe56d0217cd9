"""``sft-bridge-port demo``: the whole product in one command, offline, on a CPU in a few minutes.

    sft-bridge-port demo [--out DIR] [--steps N] [--quick]

Stages (each printed as ``[k/6]`` with the library's own progress bars under it):

1. build a tiny Llama-architecture HF model (random init, seed 0) and a BPE tokenizer trained on the shipped
   demo chats, in ``DIR/hf_base``;
2. import it into a Megatron torch_dist checkpoint with ``checkpoints_conv`` (``DIR/megatron_base``);
3. finetune it with the ``tiny_llama_sft`` recipe on the demo chats (packed, assistant-only loss, validation
   split) through ``sft_bridge_port.stages.run(cfg)``: checkpoints in ``DIR/run/checkpoints``, metrics in
   ``DIR/run/metrics.jsonl``, the loss curve in ``DIR/run/loss_curve.png``;
4. export the last checkpoint to HF (``DIR/hf_export``);
5. load the export with transformers and answer a held-out prompt (greedy);
6. print a summary, also written to ``DIR/summary.json``.

A GPU is used when present (the recipe switches to bf16 mixed precision). Re-running replaces the demo's own
sub-folders of ``DIR``; nothing else there is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

DEFAULT_OUT = "demo_run"
DEFAULT_STEPS = 100
QUICK_STEPS = 4
HELD_OUT_PROMPT = "How many minutes are in 5 hours?"  # in validation.jsonl, never in training.jsonl
SUMMARY_FILE = "summary.json"
OUTPUT_DIRS = ("hf_base", "megatron_base", "run", "hf_export", SUMMARY_FILE)
NUM_STAGES = 6


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``--out``, ``--steps`` (``--quick`` only changes the default) and their checks; exits 2 on bad usage."""
    p = argparse.ArgumentParser(prog="sft-bridge-port demo",
                                description="tiny end-to-end run: build, import, finetune, export, generate")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default ./{DEFAULT_OUT})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default {DEFAULT_STEPS}; {QUICK_STEPS} with --quick)")
    p.add_argument("--quick", action="store_true", help="a few steps only: every stage still runs (for tests)")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    if args.steps < 2:
        p.error(f"--steps must be at least 2, got {args.steps}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out} is a file; give a folder (it is created when missing)")
    return args


def eval_interval(steps: int) -> int:
    """Validate four times in a full run, once (at the end) in a short one: 100 -> 25, 4 -> 4."""
    return steps // 4 if steps >= 8 else steps


def _stage(k: int, title: str, timings: dict[str, float], fn: Callable[[], Any]) -> Any:
    """Print ``[k/6] title``, run ``fn``, record and print its wall time."""
    print(f"\n[{k}/{NUM_STAGES}] {title}", flush=True)
    t0 = time.perf_counter()
    result = fn()
    timings[title.split(":")[0]] = round(time.perf_counter() - t0, 2)
    print(f"      done in {time.perf_counter() - t0:.1f} s", flush=True)
    return result


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (one JSON object per line)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize_metrics(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Steps, first/last train loss, last validation loss and training tokens/s from metrics records.

    Tokens/s is total tokens over total time of steps 2..N (step 1 includes one-off warm-up), or of step 1
    when it is the only one. Example::

        summarize_metrics([{"kind": "train", "iteration": 1, "lm loss": 6.0, "tokens_per_s": 50, "step_time_s": 2},
                           {"kind": "train", "iteration": 2, "lm loss": 3.0, "tokens_per_s": 100, "step_time_s": 1},
                           {"kind": "valid", "iteration": 2, "lm loss": 3.5}])
        # {"steps": 2, "loss_first": 6.0, "loss_last": 3.0, "loss_drop_pct": 50.0, "eval_loss": 3.5,
        #  "tokens_per_s": 100.0}
    """
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid"]
    if not train:
        raise ValueError("metrics.jsonl has no training records: did training run?")
    timed = [r for r in (train[1:] or train) if r.get("tokens_per_s") is not None]
    tokens = sum(r["tokens_per_s"] * r["step_time_s"] for r in timed)
    seconds = sum(r["step_time_s"] for r in timed)
    first, last = train[0]["lm loss"], train[-1]["lm loss"]
    return {
        "steps": train[-1]["iteration"], "loss_first": first, "loss_last": last,
        "loss_drop_pct": 100.0 * (first - last) / first if first else float("nan"),
        "eval_loss": valid[-1]["lm loss"] if valid else None,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }  # fmt: skip


@contextlib.contextmanager
def _demo_output() -> Iterator[None]:
    """Show this library's INFO lines (data statistics, cache paths); hide megatron-core's notices (Transformer
    Engine / Apex absent, which is by design; CPU-mode RNG; deprecations) and FutureWarnings of the libraries
    underneath, so a first-time user sees the stages, the progress bars and the results. Filters and levels are
    restored afterwards (the demo also runs inside tests)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="      %(message)s")
    levels = {"sft_bridge_port": logging.INFO, "checkpoints_conv": logging.INFO, "megatron.core": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in levels}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"megatron\.")
        warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside torch / megatron-core
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)


def run_demo(out: Path, steps: int, started: Optional[float] = None) -> dict[str, Any]:
    """Run the six stages into ``out`` and return the summary (also written to ``out/summary.json``).

    ``started`` is the ``time.perf_counter()`` the wall time counts from (default: now).
    """
    t_start = time.perf_counter() if started is None else started
    from sft_bridge_port import demo_stages as st

    out.mkdir(parents=True, exist_ok=True)
    removed = st.clear_previous(out, OUTPUT_DIRS)
    if removed:
        print(f"replacing the earlier demo output in {out}: {', '.join(removed)}")
    run_dir, timings = out / "run", {}
    hf_base = _stage(1, f"build: tiny Llama + BPE tokenizer (random init, seed 0) -> {out / 'hf_base'}", timings,
                     lambda: st.build_base_model(out / "hf_base"))
    base = _stage(2, f"import: HF -> Megatron torch_dist -> {out / 'megatron_base'}", timings,
                  lambda: st.import_checkpoint(hf_base, out / "megatron_base"))
    _stage(3, f"finetune: tiny_llama_sft, {steps} steps on the demo chats -> {run_dir}", timings,
           lambda: st.finetune_demo(hf_base, base, run_dir, steps, eval_interval=eval_interval(steps)))
    export = _stage(4, f"export: Megatron -> HF -> {out / 'hf_export'}", timings,
                    lambda: st.export_checkpoint(run_dir / "checkpoints", out / "hf_export", hf_base))
    reply = _stage(5, f"generate: transformers, greedy, held-out prompt {HELD_OUT_PROMPT!r}", timings,
                   lambda: st.generate_reply(export, HELD_OUT_PROMPT))
    reference = st.reference_answer(HELD_OUT_PROMPT)
    print(f"      user:      {HELD_OUT_PROMPT}\n      assistant: {reply}\n      reference: {reference}")
    from sft_bridge_port.training.metrics import LOSS_CURVE_FILE, METRICS_FILE

    summary = {
        **summarize_metrics(read_metrics(run_dir / METRICS_FILE)),
        "prompt": HELD_OUT_PROMPT, "reply": reply, "reference": reference,
        "device": "cuda" if _cuda() else "cpu",
        "paths": {"hf_base": str(hf_base), "megatron_base": str(base), "checkpoints": str(run_dir / "checkpoints"),
                  "metrics_jsonl": str(run_dir / METRICS_FILE), "loss_curve_png": str(run_dir / LOSS_CURVE_FILE),
                  "hf_export": str(export)},
        "stage_seconds": timings, "total_seconds": round(time.perf_counter() - t_start, 2),
    }  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def print_summary(summary: dict[str, Any], out: Path) -> None:
    """Stage 6: the numbers and where every artefact is."""
    print(f"\n[6/{NUM_STAGES}] summary")
    fmt = lambda v, spec: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)  # noqa: E731
    p = summary["paths"]
    lines = [
        ("steps", str(summary["steps"])),
        ("train loss", f"{fmt(summary['loss_first'], '.3f')} -> {fmt(summary['loss_last'], '.3f')} "
                       f"({fmt(summary['loss_drop_pct'], '.0f')}% lower)"),
        ("eval loss", fmt(summary["eval_loss"], ".3f")),
        ("tokens/s", f"{fmt(summary['tokens_per_s'], '.0f')} (training, {summary['device']})"),
        ("reply", f"{summary['reply']!r} (reference: {summary['reference']!r})"),
        ("checkpoints", p["checkpoints"]),
        ("metrics", p["metrics_jsonl"]),
        ("loss curve", p["loss_curve_png"] if os.path.exists(p["loss_curve_png"]) else "not drawn (install matplotlib)"),
        ("HF export", p["hf_export"]),
        ("summary", str(out / SUMMARY_FILE)),
        ("wall time", f"{summary['total_seconds']:.0f} s"),
    ]
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"      {key:<{width}}  {value}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``sft-bridge-port demo``; returns the exit code."""
    started = time.perf_counter()
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out).resolve()
    with _demo_output():
        summary = run_demo(out, args.steps, started)
    print_summary(summary, out)
    return 0
