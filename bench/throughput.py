"""Training throughput, side by side: sft-bridge-port (megatron-core) vs HF transformers, same packed batches.

    python -m bench.throughput --model llama32_1b --mode sft --seq 4096 --steps 8 --baseline hf

Random weights of the real architecture (built-in configs), the same packed token stream for every system
(:mod:`bench.stream`), full optimizer steps of ``--micro-batches`` packs each (:mod:`bench.systems`),
``--warmup`` steps excluded. Prints one JSON line per system, then one ratio line per system against the
baseline; ``--out`` also writes all of it (plus GPU name and versions) to a JSON file.

Reported: ``tokens_per_s`` (real tokens: packs hold no padding), ``tflops_per_gpu`` and ``mfu`` from
:mod:`bench.flops` (``k·N_matmul·T + 6·L·h·Σs_i²``, k = 6 full / 4 LoRA, peak 989 TFLOP/s bf16),
``peak_mem_gib`` (``torch.cuda.max_memory_allocated`` over the timed steps, weights and optimizer included).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from bench.flops import Dims, mfu, step_flops
from bench.stream import make_packs
from bench.systems import build_hf, build_ours

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


def time_system(system, batches: list, warmup: int) -> tuple[float, float | None]:
    """(seconds per step, peak GiB or None on CPU) over ``batches[warmup:]``; warm-up steps not timed."""
    for packs in batches[:warmup]:
        system.step(packs)
    _sync()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for packs in batches[warmup:]:
        system.step(packs)
    _sync()
    sec = (time.perf_counter() - start) / max(1, len(batches) - warmup)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return sec, peak


def _row(label: str, args, dims: Dims, batches: list, sec: float, peak, n_trainable: int) -> dict[str, Any]:
    lengths = [n for packs in batches for p in packs for n in p.lengths]
    per_step_flops = step_flops(dims, lengths, args.mode) / len(batches)
    tokens = sum(lengths) / len(batches)
    return {
        "system": label, "model": args.model, "mode": args.mode, "seq": args.seq,
        "micro_batches": args.micro_batches, "timed_steps": args.steps, "ms_per_step": round(sec * 1e3, 2),
        "tokens_per_s": round(tokens / sec, 1), "tflops_per_gpu": round(per_step_flops / sec / 1e12, 1),
        "mfu": round(mfu(per_step_flops / sec), 4), "peak_mem_gib": None if peak is None else round(peak, 2),
        "n_trainable": n_trainable, "docs_per_pack": round(len(lengths) / (len(batches) * args.micro_batches), 2),
    }  # fmt: skip


def run_one(spec: str, args, hf_cfg: dict, batches: list) -> dict[str, Any]:
    """Build, time and free one system (``ours``, ``ours:ce_fused+compile``, ``hf:compile`` ...)."""
    kind, _, rest = spec.partition(":")
    variants = set(filter(None, rest.split("+")))
    build = {"ours": build_ours, "hf": build_hf}.get(kind)
    if build is None:
        raise ValueError(f"unknown system {spec!r}: use ours[:variants] or hf[:variants]")
    system = build(hf_cfg, args.seq, args.micro_batches, args.mode, variants)
    n_trainable = system.n_trainable
    try:
        sec, peak = time_system(system, batches, args.warmup)
        if args.profile and kind == "ours":
            profile(system, batches[-1], Path(args.profile) / f"{spec.replace(':', '_').replace('+', '-')}.txt")
    finally:
        system.close()
        del system
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return _row(spec, args, Dims.from_hf(hf_cfg), batches[args.warmup :], sec, peak, n_trainable)


def profile(system, packs, path: Path) -> None:
    """Top kernels of one step (torch.profiler), written to ``path`` and the first lines printed."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch_profile(activities=acts) as prof:
        system.step(packs)
        _sync()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
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
    p.add_argument("--micro-batches", type=int, default=4, help="packs per optimizer step (grad accumulation)")
    p.add_argument("--baseline", default="hf", help="system spec of the baseline, or 'none'")
    p.add_argument("--systems", default="ours", help="comma-separated system specs besides the baseline")
    p.add_argument("--out", default=None, help="write the rows + environment to this JSON file")
    p.add_argument("--profile", default=None, help="folder for a torch.profiler table of each 'ours' system")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    hf_cfg = model_config(args.model)
    n_steps = args.warmup + args.steps
    packs = make_packs(n_steps * args.micro_batches, args.seq, hf_cfg["vocab_size"])
    batches = [packs[i * args.micro_batches : (i + 1) * args.micro_batches] for i in range(n_steps)]
    specs = [s for s in args.systems.split(",") if s] + ([] if args.baseline == "none" else [args.baseline])
    from sft_bridge_port.utils.dist_context import parallel_context

    rows = []
    for spec in dict.fromkeys(specs):
        try:
            if spec.startswith("ours"):
                with parallel_context():
                    rows.append(run_one(spec, args, hf_cfg, batches))
            else:
                rows.append(run_one(spec, args, hf_cfg, batches))
            print(json.dumps(rows[-1]), flush=True)
        except Exception as exc:  # one failing variant must not lose the others' figures
            traceback.print_exc()
            rows.append({"system": spec, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(json.dumps(rows[-1]), flush=True)
    rows += ratios(rows, args.baseline)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv, "env": environment(), "rows": rows}, indent=1))
    return rows


def ratios(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
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
        print(json.dumps(line), flush=True)
        out.append(line)
    return out


if __name__ == "__main__":
    main()
