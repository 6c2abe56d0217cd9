"""Probe (round 4): where the host (Python) time of one training step goes, at 1 pack per micro-batch.

    python bench/scripts/profile_host.py [variants]     # on the GPU, e.g. "pure"; prints cProfile's top functions

Builds ``ours`` exactly as the benchmark does (Llama-3.2-1B, 8 micro-batches of one 4096-token pack), runs 3
warm-up steps, then profiles 2 steps with cProfile (tottime and cumtime tables) and, for scale, times 2 steps
without the profiler.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import torch

from bench.stream import make_packs
from bench.systems import build_ours
from bench.throughput import model_config


def main() -> None:
    variants = set(filter(None, (sys.argv[1] if len(sys.argv) > 1 else "").split("+")))
    cfg = model_config("llama32_1b")
    packs = make_packs(7 * 8, 4096, cfg["vocab_size"])
    steps = [[[packs[s * 8 + m]] for m in range(8)] for s in range(7)]
    from sft_bridge_port.utils.dist_context import parallel_context

    with parallel_context():
        system = build_ours(cfg, 4096, 8, "sft", variants)
        for batches in steps[:3]:
            system.step(batches)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for batches in steps[3:5]:
            system.step(batches)
        torch.cuda.synchronize()
        print(f"step without profiler: {(time.perf_counter() - start) / 2 * 1e3:.1f} ms", flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for batches in steps[5:7]:
            system.step(batches)
        torch.cuda.synchronize()
        prof.disable()
        system.close()
    stats = pstats.Stats(prof)
    for key in ("tottime", "cumtime"):
        print(f"--- top by {key} (2 steps) ---", flush=True)
        stats.sort_stats(key).print_stats(45)


if __name__ == "__main__":
    main()
