"""Training throughput, side by side: sft-bridge-port (megatron-core) vs HF transformers, same packed batches.

    python -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 8 --baseline hf
    torchrun --nproc_per_node 2 -m bench.throughput --model llama3_8b --systems ours:distopt --baseline none

Random weights of the real architecture (built-in configs), the same packed token stream for every system
(:mod:`bench.stream`), full optimizer steps of ``--micro-batches`` micro-batches of ``--packs-per-micro-batch``
packs each, per data-parallel rank (:mod:`bench.systems`), ``--warmup`` steps excluded. Under ``torchrun`` the
ranks are data-parallel replicas of "ours" (no HF baseline) and rank 0 prints; tokens/s are summed over ranks,
TFLOP/s and MFU are per GPU, peak memory is the largest rank's. Prints one JSON line per system, then one ratio line
per system against the baseline; ``--out`` also writes all of it (plus GPU name and versions) to a JSON file.

Reported: ``tokens_per_s`` (real tokens: packs hold no padding), ``tflops_per_gpu`` and ``mfu`` from
:mod:`bench.flops` (``k·N_matmul·T + 6·L·h·Σs_i²``, k = 6 full / 4 LoRA, peak 989 TFLOP/s bf16),
``peak_mem_gib`` (``torch.cuda.max_memory_allocated`` over the timed steps, weights and optimizer included).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.flops import Dims, mfu, step_flops
from bench.stream import make_packs
from bench.systems import HF_VARIANTS, OURS_VARIANTS, build_hf, build_ours

MODELS = {
    "llama32_1b": "meta-llama/Llama-3.2-1B",
    "llama3_8b": "meta-llama/Meta-Llama-3-8B",
    "qwen3_8b": "Qwen/Qwen3-8B",
}
TINY = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True, "max_position_embeddings": 4096,
    "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
}  # fmt: skip


def model_config(name: str) -> dict[str, Any]:
    """HF config dict of a benchmark model (``tiny`` is a 2-layer Llama for the CPU regression test)."""
    if name == "tiny":
        return dict(TINY)
    if name not in MODELS:
        raise ValueError(f"--model must be one of {sorted(MODELS) + ['tiny']}, got {name!r}")
    from sft_bridge_port.models.builtin_configs import public_config

    return public_config(MODELS[name])


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _world() -> tuple[int, int]:
    """(rank, world size) of a ``torchrun`` launch; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _max_over_ranks(value: float) -> float:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device="cuda" if torch.cuda.is_available() else "cpu")
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def time_system(system, batches: list, warmup: int) -> tuple[float, float | None]:
    """(seconds per step, peak GiB or None on CPU) over ``batches[warmup:]``; warm-up steps not timed.

    ``batches[i]`` is this rank's list of micro-batches of step ``i``. Under ``torchrun`` both figures are the
    slowest / largest rank's.
    """
    for micro_batches in batches[:warmup]:
        system.step(micro_batches)
    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for micro_batches in batches[warmup:]:
        system.step(micro_batches)
    _sync()
    sec = _max_over_ranks((time.perf_counter() - start) / max(1, len(batches) - warmup))
    peak = _max_over_ranks(torch.cuda.max_memory_allocated() / 2**30) if torch.cuda.is_available() else None
    return sec, peak


def _row(label: str, args, dims: Dims, steps: list, sec: float, peak, n_trainable: int) -> dict[str, Any]:
    """Figures of one system; ``steps[i]`` holds step ``i``'s packs of every rank (the global batch)."""
    world = _world()[1]
    lengths = [n for packs in steps for p in packs for n in p.lengths]
    per_step_flops = step_flops(dims, lengths, args.mode) / len(steps)
    tokens = sum(lengths) / len(steps)
    n_packs = sum(len(packs) for packs in steps)
    return {
        "system": label, "model": args.model, "mode": args.mode, "seq": args.seq, "gpus": world,
        "micro_batches": args.micro_batches, "packs_per_micro_batch": args.packs_per_micro_batch,
        "packs_per_step": n_packs // len(steps), "timed_steps": args.steps, "ms_per_step": round(sec * 1e3, 2),
        "tokens_per_s": round(tokens / sec, 1), "tflops_per_gpu": round(per_step_flops / sec / world / 1e12, 1),
        "mfu": round(mfu(per_step_flops / sec / world), 4), "peak_mem_gib": None if peak is None else round(peak, 2),
        "n_trainable": n_trainable, "docs_per_pack": round(len(lengths) / n_packs, 2),
    }  # fmt: skip


def parse_system(spec: str) -> tuple[str, set[str]]:
    """``"ours:pure+keeplogits"`` -> ``("ours", {"pure", "keeplogits"})``; a typo fails before anything runs."""
    kind, _, rest = spec.partition(":")
    variants = set(filter(None, rest.split("+")))
    known = {"ours": OURS_VARIANTS, "hf": HF_VARIANTS}.get(kind)
    if known is None:
        raise ValueError(f"unknown system {spec!r}: use ours[:variants] or hf[:variants]")
    if variants - known:
        raise ValueError(f"{spec!r}: unknown variant(s) {sorted(variants - known)}; {kind} takes {sorted(known)}")
    return kind, variants


def run_one(spec: str, args, hf_cfg: dict, packs: list) -> dict[str, Any]:
    """Build, time and free one system (``ours``, ``ours:ce_fused+compile``, ``hf:compile`` ...).

    ``packs[step][micro_batch]`` is a list of packs (global: every rank's micro-batches of the step).
    """
    kind, variants = parse_system(spec)
    build = {"ours": build_ours, "hf": build_hf}[kind]
    rank, world = _world()
    if world > 1 and kind != "ours":
        raise ValueError(f"{spec!r} under torchrun: only 'ours' systems run data-parallel here; pass --baseline none")
    seq = args.seq * args.packs_per_micro_batch if kind == "ours" else args.seq  # ours: one joined row
    system = build(hf_cfg, seq, args.micro_batches, args.mode, variants)
    n_trainable = system.n_trainable
    mine = [step[rank * args.micro_batches : (rank + 1) * args.micro_batches] for step in packs]
    try:
        sec, peak = time_system(system, mine, args.warmup)
        if args.profile and kind == "ours" and rank == 0:
            profile(system, mine[-1], Path(args.profile) / f"{spec.replace(':', '_').replace('+', '-')}.txt")
    finally:
        system.close()
        del system
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    timed = [[p for mb in step for p in mb] for step in packs[args.warmup :]]
    return _row(spec, args, Dims.from_hf(hf_cfg), timed, sec, peak, n_trainable)


def profile(system, micro_batches: list, path: Path) -> None:
    """Top kernels of one step (torch.profiler), written to ``path`` and the first lines printed."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=acts) as prof:
        system.step(micro_batches)
        _sync()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    # the step's timeline (kernels, host ops, gaps) next to the table; torch gzips a path ending in .gz
    prof.export_chrome_trace(str(path.with_suffix(".trace.json.gz")))
    print("\n".join(table.splitlines()[:28]), flush=True)


def environment() -> dict[str, Any]:
    """GPU name and library versions, stored with every result file."""
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import megatron.core

        env["megatron_core"] = megatron.core.__version__
    except Exception:  # pragma: no cover - only the version string is optional
        pass
    env["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="llama32_1b", help=f"one of {sorted(MODELS)} or tiny")
    p.add_argument("--mode", choices=["sft", "lora"], default="sft")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--micro-batches", type=int, default=4, help="micro-batches per optimizer step and rank")
    p.add_argument("--packs-per-micro-batch", type=int, default=1,
                   help="K packs per micro-batch: ours joins them into one K*seq row (= packed_sequence_size K*seq), "
                        "HF stacks them into a [K, seq] batch")
    p.add_argument("--baseline", default="hf", help="system spec of the baseline, or 'none'")
    p.add_argument("--systems", default="ours", help="comma-separated system specs besides the baseline")
    p.add_argument("--out", default=None, help="write the rows + environment to this JSON file")
    p.add_argument("--profile", default=None, help="folder for a torch.profiler table of each 'ours' system")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    hf_cfg = model_config(args.model)
    rank, world = _world()
    n_steps, k = args.warmup + args.steps, args.packs_per_micro_batch
    per_step = args.micro_batches * world  # micro-batches of one optimizer step, all ranks
    flat = make_packs(n_steps * per_step * k, args.seq, hf_cfg["vocab_size"])
    micro = [flat[i * k : (i + 1) * k] for i in range(n_steps * per_step)]
    packs = [micro[i * per_step : (i + 1) * per_step] for i in range(n_steps)]
    specs = [s for s in args.systems.split(",") if s] + ([] if args.baseline == "none" else [args.baseline])
    for spec in specs:
        parse_system(spec)
    from sft_bridge_port.utils.dist_context import parallel_context

    say = _print_json if rank == 0 else (lambda line: None)  # noqa: E731
    rows = []
    for spec in dict.fromkeys(specs):
        try:
            if spec.startswith("ours"):
                with parallel_context():
                    rows.append(run_one(spec, args, hf_cfg, packs))
            else:
                rows.append(run_one(spec, args, hf_cfg, packs))
        except Exception as exc:  # one failing variant must not lose the others' figures
            traceback.print_exc()
            rows.append({"system": spec, "error": f"{type(exc).__name__}: {exc}"[:500]})
        say(rows[-1])
    rows += ratios(rows, args.baseline, say)
    if args.out and rank == 0:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv, "env": environment(), "rows": rows}, indent=1))
    return rows


def _print_json(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def ratios(rows: list[dict[str, Any]], baseline: str, say=_print_json) -> list[dict[str, Any]]:
    """One line per system: its tokens/s and peak memory over the baseline's (same run, same batches)."""
    base = next((r for r in rows if r["system"] == baseline and "error" not in r), None)
    out = []
    for r in rows:
        if base is None or r is base or "error" in r:
            continue
        line = {"ratio": f"{r['system']}/{baseline}",
                "tokens_per_s": round(r["tokens_per_s"] / base["tokens_per_s"], 3)}  # fmt: skip
        if r["peak_mem_gib"] and base["peak_mem_gib"]:
            line["peak_memory"] = round(r["peak_mem_gib"] / base["peak_mem_gib"], 3)
        say(line)
        out.append(line)
    return out


if __name__ == "__main__":
    main()
