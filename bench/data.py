#!/usr/bin/env python
"""Benchmark: conversations/s for tokenise + mask + pack on one CPU core (not a test).

Short chats from the demo generator (1-3 exchanges), a byte-level BPE tokenizer trained on them with the Llama-3
style template (fast tokenizer, no ``{% generation %}``), the full masking path (``SampleEncoder.encode_rows``:
format adapter, template render, token-exact checks) and first-fit-decreasing packing to 2048. Single-threaded
(RAYON_NUM_THREADS=1), so the figure is per core. Each stage is timed ``--repeat`` times and the best run is kept;
both wall-clock and process CPU time are reported (CPU time is the per-core figure that survives a busy machine),
with the load average. ``--exact`` times the per-prefix reference method instead of the one-render path.

Run: ``PYTHONPATH=. python bench/data.py [--n 20000] [--template llama3|chatml|mistral] [--repeat 3] [--exact]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.make_demo_dataset import make_row  # noqa: E402
from sft_bridge_port.data.config import FinetuningDatasetConfig  # noqa: E402
from sft_bridge_port.data.encode import SampleEncoder  # noqa: E402
from sft_bridge_port.data.formats import row_to_conversation  # noqa: E402
from sft_bridge_port.data.packing import pack_samples  # noqa: E402
from sft_bridge_port.data.stats import DataStats  # noqa: E402
from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, float, object]:
    """(best wall seconds, best CPU seconds, last result) over ``repeat`` runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--template", default="llama3")
    parser.add_argument("--verify", type=int, default=1, help="token-exact prefix check (default on)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--exact", action="store_true", help="time the per-prefix reference method")
    args = parser.parse_args()
    rng = random.Random(0)
    rows = [make_row(rng) for _ in range(args.n)]
    n = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tiny_tokenizer(tmp, [json.dumps(r) for r in rows[:2000]], vocab_size=2000,
                                   chat_template=args.template)
    cfg = FinetuningDatasetConfig(seq_length=2048, verify_prefix_tokens=bool(args.verify))
    encoder = SampleEncoder(cfg, tok)
    if args.exact:
        encoder.chat.encode_many = lambda convs: [encoder.chat.encode_exact(c) for c in convs]
    located = [(r, f"bench[{i}]") for i, r in enumerate(rows)]
    encoder.encode_rows(located[:2000], DataStats())  # warm-up (template compile, shapes, caches)
    load = os.getloadavg()
    a_wall, a_cpu, _ = best_of(args.repeat, lambda: [row_to_conversation(r, s) for r, s in located])
    e_wall, e_cpu, samples = best_of(args.repeat, lambda: encoder.encode_rows(located, DataStats()))
    p_wall, p_cpu, (packs, meta) = best_of(args.repeat, lambda: pack_samples(samples, 2048))
    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    backend = tok.backend_tokenizer
    fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
    t_wall, t_cpu, _ = best_of(args.repeat, lambda: [fast(texts[i:i + 256], add_special_tokens=False)
                                                     for i in range(0, n, 256)])
    turns = sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    print(f"conversations: {n} ({turns / n:.2f} assistant turns, {sum(len(s.input_ids) for s in samples) / n:.1f} "
          f"tokens each), template={args.template}, verify={bool(args.verify)}, "
          f"method={'exact' if args.exact else 'one-render'}, best of {args.repeat}")
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    print(f"  format adapter alone:     {n / a_cpu:>9,.0f} conv/s CPU   {n / a_wall:>9,.0f} conv/s wall")
    print(f"  tokenise+mask (incl. it): {n / e_cpu:>9,.0f} conv/s CPU   {n / e_wall:>9,.0f} conv/s wall")
    print(f"  tokenizer alone (floor):  {n / t_cpu:>9,.0f} conv/s CPU   {n / t_wall:>9,.0f} conv/s wall"
          "   (ids of the rendered chats, batches of 256)")
    print(f"  pack:                     {n / p_cpu:>9,.0f} conv/s CPU   {n / p_wall:>9,.0f} conv/s wall")
    print(f"tokenise+mask+pack: {n / (e_cpu + p_cpu):,.0f} conversations/s per core (CPU time), "
          f"{n / (e_wall + p_wall):,.0f} wall ({len(packs)} packs, efficiency {meta['packing_efficiency']:.3f})")


if __name__ == "__main__":
    main()
