"""Prove that DP, TP(+SP), PP, the distributed optimizer and their combination train like one device.

Three modes::

    # build tokenizer, model, Megatron import and packed data once (one process)
    python tests/distributed/equivalence.py prepare --work /tmp/eq --size gpu
    # train layouts in one process group (the ones whose device count is the world size), e.g.
    torchrun --nproc-per-node 2 tests/distributed/equivalence.py worker --work /tmp/eq --size gpu \
        --config dp2 --config tp2_sp --precision fp32
    # everything: prepare, launch every layout with torchrun (several at once on a multi-GPU host), compare, report
    python tests/distributed/equivalence.py drive --work /tmp/eq --size gpu --precision fp32 --precision bf16 \
        --results tests/distributed/results

The report (``equivalence_<size>.json`` and ``.md``) has one row per layout and precision: max |Δloss| and
max |Δgrad-norm| against the reference over all steps (absolute and relative), the tolerance, pass/fail; see
:mod:`tests.distributed.runs` for the layouts and :mod:`tests.distributed.compare` for the tolerances.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.distributed.compare import TOLERANCES, build_report, load_results, markdown_table  # noqa: E402
from tests.distributed.runs import LAYOUTS, SIZES, prepare  # noqa: E402
from tests.unit.torchrun import repo_pythonpath  # noqa: E402

# The order layouts run in within one job: a resume after the run it resumes from; CP last.
RUN_ORDER = ("ref", "ref_pad4", "dp2", "tp2_sp", "pp2", "dp2_distopt", "resume_pp2", "dp2_tp2_sp", "cp2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("prepare", "worker", "drive"))
    p.add_argument("--work", type=Path, required=True, help="folder for the model, data, runs and logs")
    p.add_argument("--size", choices=tuple(SIZES), default="tiny")
    p.add_argument("--config", action="append", choices=tuple(LAYOUTS), help="layouts (default: all)")
    p.add_argument("--precision", action="append", choices=tuple(TOLERANCES), help="default: fp32")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--results", type=Path, default=None, help="drive: where to write the JSON + markdown report")
    p.add_argument("--devices", type=int, default=None,
                   help="drive: devices to spread jobs over (default: visible GPUs, else 3 CPU process slots)")
    p.add_argument("--timeout", type=int, default=900, help="drive: seconds per job")
    args = p.parse_args(argv)
    args.config = [c for c in RUN_ORDER if c in (args.config or RUN_ORDER)]
    args.precision = args.precision or ["fp32"]
    return args


def worker(args: argparse.Namespace) -> int:
    """Run every requested (precision, layout) whose device count is this world's size, in ``RUN_ORDER``."""
    import torch

    from sft_bridge_port.utils.dist_context import init_distributed
    from tests.distributed.runs import run_one

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 must be fp32 for the tight tolerance
    torch.backends.cudnn.allow_tf32 = False
    init_distributed()
    world = torch.distributed.get_world_size()
    failed = 0
    for precision in args.precision:
        for name in args.config:
            if LAYOUTS[name].nproc != world:
                continue
            t0 = time.perf_counter()
            result = run_one(args.work.resolve(), args.size, name, precision, args.steps)
            failed += result["status"] == "error"
            if torch.distributed.get_rank() == world - 1:
                print(f"[equivalence] {precision} {name}: {result['status']} in {time.perf_counter() - t0:.1f} s "
                      f"{result.get('message', '')}", flush=True)
    torch.distributed.destroy_process_group()
    return 1 if failed else 0


def _jobs(configs: list[str], precisions: list[str], devices: int) -> tuple[list[dict[str, Any]], list[str]]:
    """One job per device count (one process group runs its layouts one after another), largest first;
    the layouts needing more devices than there are are returned as skipped."""
    by_n: dict[int, list[str]] = {}
    skipped = []
    for name in configs:
        n = LAYOUTS[name].nproc
        (by_n.setdefault(n, []) if n <= devices else skipped).append(name)
    jobs = []
    for n in sorted(by_n, reverse=True):
        if len(precisions) > 1 and devices >= 2 * n:  # precisions side by side when devices allow
            jobs += [{"nproc": n, "configs": by_n[n], "precisions": [p]} for p in precisions]
        else:
            jobs.append({"nproc": n, "configs": by_n[n], "precisions": precisions})
    return jobs, skipped


def _command(args: argparse.Namespace, job: dict[str, Any]) -> list[str]:
    script = [str(Path(__file__).resolve()), "worker", "--work", str(args.work.resolve()), "--size", args.size,
              "--steps", str(args.steps)]
    script += [x for c in job["configs"] for x in ("--config", c)]
    script += [x for p in job["precisions"] for x in ("--precision", p)]
    if job["nproc"] == 1:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={job['nproc']}", *script]


def _launch(args: argparse.Namespace, job: dict[str, Any], devices: list[int], cuda: bool, k: int):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(PYTHONPATH=repo_pythonpath(), PYTHONUNBUFFERED="1",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    if cuda:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    else:
        env["OMP_NUM_THREADS"] = "1"
    log = open(args.work / "logs" / f"job{k}_{job['nproc']}proc.log", "w")
    log.write(" ".join(_command(args, job)) + "\n")
    log.flush()
    proc = subprocess.Popen(_command(args, job), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc, log


def run_jobs(args: argparse.Namespace, jobs: list[dict[str, Any]], slots: int, cuda: bool) -> dict[int, int]:
    """Start jobs whenever enough devices are free (in list order); returns job index -> exit code."""
    free, pending, running, codes = list(range(slots)), list(enumerate(jobs)), {}, {}
    while pending or running:
        for k, job in list(pending):
            if job["nproc"] <= len(free):
                take, free = free[: job["nproc"]], free[job["nproc"]:]
                proc, log = _launch(args, job, take, cuda, k)
                running[k] = (proc, log, take, time.monotonic())
                pending.remove((k, job))
        time.sleep(0.5)
        for k, (proc, log, take, t0) in list(running.items()):
            if proc.poll() is None and time.monotonic() - t0 > args.timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if proc.poll() is not None:
                codes[k] = proc.returncode
                log.close()
                free += take
                del running[k]
                print(f"[drive] job {k} ({jobs[k]['nproc']} proc: {', '.join(jobs[k]['configs'])}) exit "
                      f"{proc.returncode} after {time.monotonic() - t0:.0f} s", flush=True)
    return codes


def _environment() -> dict[str, Any]:
    import torch

    env = {"torch": torch.__version__, "python": sys.version.split()[0],
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    try:
        import megatron.core

        env["megatron_core"] = megatron.core.__version__
    except Exception:  # reported, not fatal
        env["megatron_core"] = "unknown"
    env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return env


def drive(args: argparse.Namespace) -> int:
    """prepare -> jobs -> report; returns 0 when every compared row passed."""
    import torch

    cuda = torch.cuda.is_available()
    slots = args.devices or (torch.cuda.device_count() if cuda else 3)
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": repo_pythonpath()}
    with open(args.work / "logs" / "prepare.log", "w") as log:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "prepare", "--work", str(args.work.resolve()),
                        "--size", args.size], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    print(f"[drive] prepared in {time.perf_counter() - t0:.0f} s", flush=True)
    jobs, skipped = _jobs(args.config, args.precision, slots)
    run_jobs(args, jobs, slots, cuda)
    rows = build_report(load_results(args.work), LAYOUTS, args.steps)
    for name in skipped:
        rows += [{"config": name, "precision": p, "status": "not run", "reference": LAYOUTS[name].reference,
                  "description": LAYOUTS[name].description, "tolerance_rel": TOLERANCES[p], "passed": None,
                  "message": f"needs {LAYOUTS[name].nproc} devices, {slots} available"} for p in args.precision]
    table = markdown_table(rows)
    print(table, flush=True)
    report = {"size": args.size, "model": SIZES[args.size], "steps": args.steps, "environment": _environment(),
              "wall_s": round(time.perf_counter() - t0, 1), "tolerances_rel": TOLERANCES, "rows": rows,
              "runs": {f"{p}-{n}": r for (p, n), r in load_results(args.work).items()}}
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / f"equivalence_{args.size}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.results / f"equivalence_{args.size}.md").write_text(table)
    return 0 if all(r["passed"] is not False for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "prepare":
        prepare(args.work.resolve(), args.size)
        return 0
    if args.mode == "worker":
        return worker(args)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
