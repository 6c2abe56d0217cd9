"""``sft-bridge-port data preview|pack``: look at what will be trained, and prepare the packed cache ahead of time.

``register(subparsers)`` adds the ``data`` command to the top-level CLI; ``main(argv)`` runs it standalone
(``python -m sft_bridge_port.data.cli preview --data d/ --tokenizer tok/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from sft_bridge_port.data.config import FinetuningDatasetConfig, PackedSequenceSpecs
from sft_bridge_port.data.encode import SampleEncoder
from sft_bridge_port.data.sources import iter_rows, split_sources
from sft_bridge_port.data.stats import DataStats
from sft_bridge_port.data.tokenizer import load_tokenizer

_START, _END = "\x1b[1;32m", "\x1b[0m"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="data file, Bridge-layout folder (training.jsonl, ...)")
    p.add_argument("--tokenizer", required=True, help="HF tokenizer folder or id")
    p.add_argument("--format", default=None, help="openai_messages | sharegpt | alpaca | prompt_completion")
    p.add_argument("--chat-template", default=None, help="Jinja file (or built-in name) overriding the tokenizer's")
    p.add_argument("--seq-length", type=int, default=4096)
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="skip")
    p.add_argument("--reasoning", choices=("keep", "strip"), default="keep")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``data preview`` and ``data pack`` to an ``argparse`` subparsers object."""
    data = subparsers.add_parser("data", help="inspect and prepare SFT data")
    sub = data.add_subparsers(dest="data_command", required=True)
    prev = sub.add_parser("preview", help="show tokens with the trained span highlighted, plus counts")
    _common(prev)
    prev.add_argument("--n", type=int, default=3, help="samples to show")
    prev.add_argument("--json", action="store_true", help="print [{input_ids, loss_mask}] (unpacked, before shift)")
    prev.set_defaults(func=preview)
    pk = sub.add_parser("pack", help="tokenise, pack and cache the splits (parquet + metadata)")
    _common(pk)
    pk.add_argument("--pack-size", type=int, default=None, help="packed_sequence_size (default: --seq-length)")
    pk.add_argument("--pad-seq-to-mult", type=int, default=1)
    pk.add_argument("--algorithm", choices=("first_fit_decreasing", "first_fit_shuffle"),
                    default="first_fit_decreasing")
    pk.add_argument("--seed", type=int, default=1234)
    pk.set_defaults(func=pack)
    return data


def _config(args: argparse.Namespace, specs: PackedSequenceSpecs | None = None) -> FinetuningDatasetConfig:
    return FinetuningDatasetConfig(dataset_root=args.data, seq_length=args.seq_length, format=args.format,
                                   chat_template=args.chat_template, on_bad_sample=args.on_bad_sample,
                                   reasoning=args.reasoning, packed_sequence_specs=specs,
                                   seed=getattr(args, "seed", 1234))


def preview(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Encode the training split; show ``--n`` samples and the counts over the whole split."""
    tok = load_tokenizer(args.tokenizer)
    cfg = _config(args)
    stats = DataStats()
    samples = SampleEncoder(cfg, tok).encode_rows(iter_rows(split_sources(args.data)["training"]), stats)
    shown = samples[: args.n]
    if args.json:
        json.dump([{"input_ids": s.input_ids.tolist(), "loss_mask": s.loss_mask.tolist()} for s in shown], out)
        out.write("\n")
    else:
        color = out.isatty()
        for i, s in enumerate(shown):
            out.write(f"--- sample {i} ({len(s.input_ids)} tokens, {int(s.loss_mask.sum())} trained"
                      f"{', truncated' if s.truncated else ''}) ---\n{highlight(tok, s, color)}\n")
    (err if args.json else out).write(stats.report("training") + "\n")
    return 0


def highlight(tok: Any, sample: Any, color: bool = False) -> str:
    """Decoded text with trained runs wrapped in ANSI green (``color``) or ``[[ ]]``."""
    start, end = (_START, _END) if color else ("[[", "]]")
    pieces, run, trained = [], [], None
    for tid, m in zip(sample.input_ids.tolist(), sample.loss_mask.tolist()):
        if trained is not None and bool(m) != trained:
            text = tok.decode(run)
            pieces.append(f"{start}{text}{end}" if trained else text)
            run = []
        run.append(tid)
        trained = bool(m)
    if run:
        text = tok.decode(run)
        pieces.append(f"{start}{text}{end}" if trained else text)
    return "".join(pieces)


def pack(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Build (or reuse) the packed parquet cache of every split and print where it is and how full it is."""
    from sft_bridge_port.data.builder import prepare_splits

    specs = PackedSequenceSpecs(packed_sequence_size=args.pack_size or args.seq_length,
                                pad_seq_to_mult=args.pad_seq_to_mult, packing_algorithm=args.algorithm)
    splits = prepare_splits(_config(args, specs), load_tokenizer(args.tokenizer))
    for name, split in splits.items():
        state = "reused" if split.meta.get("cache_hit") else "written"
        out.write(f"{split.stats.report(name)}\n  cache {state}: {split.meta.get('cache_path')}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sft-bridge-port")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
