#!/usr/bin/env python
"""Benchmark: conversations/s for tokenise + mask + pack on one CPU core (not a test).

Short chats from the demo generator (1-3 exchanges), a byte-level BPE tokenizer trained on them with the Llama-3
style template (fast tokenizer, no ``{% generation %}``), the full masking path (template renders + token-exact
prefix checks) and first-fit-decreasing packing to 2048. Single-threaded (RAYON_NUM_THREADS=1), so the figure is per
core. Run: ``PYTHONPATH=. python bench/data.py [--n 20000] [--template llama3|chatml]``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.make_demo_dataset import make_row  # noqa: E402
from sft_bridge_port.data.config import FinetuningDatasetConfig  # noqa: E402
from sft_bridge_port.data.encode import SampleEncoder  # noqa: E402
from sft_bridge_port.data.packing import pack_samples  # noqa: E402
from sft_bridge_port.data.stats import DataStats  # noqa: E402
from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--template", default="llama3")
    parser.add_argument("--verify", type=int, default=1, help="token-exact prefix check (default on)")
    args = parser.parse_args()
    rng = random.Random(0)
    rows = [make_row(rng) for _ in range(args.n)]
    with tempfile.TemporaryDirectory() as tmp:
        tok = build_tiny_tokenizer(tmp, [json.dumps(r) for r in rows[:2000]], vocab_size=2000,
                                   chat_template=args.template)
    cfg = FinetuningDatasetConfig(seq_length=2048, verify_prefix_tokens=bool(args.verify))
    encoder = SampleEncoder(cfg, tok)
    located = [(r, f"bench[{i}]") for i, r in enumerate(rows)]
    encoder.encode_rows(located[:200], DataStats())  # warm-up (template compile, caches)
    stats = DataStats()
    t0 = time.perf_counter()
    samples = encoder.encode_rows(located, stats)
    t1 = time.perf_counter()
    packs, meta = pack_samples(samples, 2048)
    t2 = time.perf_counter()
    turns = sum(sum(m["role"] == "assistant" for m in r["messages"]) for r in rows)
    print(f"conversations: {len(rows)} ({turns / len(rows):.2f} assistant turns, "
          f"{stats.tokens / len(rows):.1f} tokens each), template={args.template}, verify={bool(args.verify)}")
    print(f"tokenise+mask: {len(rows) / (t1 - t0):,.0f} conv/s   pack: {len(rows) / (t2 - t1):,.0f} conv/s")
    print(f"tokenise+mask+pack: {len(rows) / (t2 - t0):,.0f} conversations/s on 1 core "
          f"({len(packs)} packs, efficiency {meta['packing_efficiency']:.3f})")


if __name__ == "__main__":
    main()
