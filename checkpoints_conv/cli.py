"""``python -m checkpoints_conv import|export|verify|merge|export-adapter`` (Bridge's convert_checkpoints.py flags).

``merge`` and ``export-adapter`` take a PEFT (LoRA/DoRA) run's checkpoint: see ``peft_merge`` / ``peft_export``.

Exit codes: 0 success, 1 ``verify`` found the models differ, 2 bad input (the message says what and how to fix).
"""

from __future__ import annotations

import argparse
import re
import sys


def parse_size(text: str) -> int:
    """``"5GB"`` -> 5 * 1024**3; ``"500MB"``; a plain number is bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"size {text!r}: use e.g. 5GB, 500MB or a number of bytes")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2) or " "))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m checkpoints_conv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="HF folder or hub id -> Megatron checkpoint (torch_dist)")
    imp.add_argument("--hf-model", required=True, help="HF model folder (or hub id)")
    imp.add_argument("--megatron-path", required=True, help="output checkpoint folder")
    imp.add_argument("--tp", type=int, default=1, help="tensor parallel size training will use")
    imp.add_argument("--pp", type=int, default=1, help="pipeline parallel size training will use")
    imp.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: the safetensors dtype)")
    exp = sub.add_parser("export", help="Megatron checkpoint (any TP/PP) -> HF folder")
    exp.add_argument("--megatron-path", required=True, help="checkpoint root or iter_XXXXXXX folder")
    exp.add_argument("--hf-path", required=True, help="output HF folder")
    exp.add_argument("--hf-config-source", default=None, help="HF folder whose config.json to copy")
    exp.add_argument("--max-shard-size", type=parse_size, default=parse_size("5GB"), help="e.g. 5GB (default)")
    ver = sub.add_parser("verify", help="compare HF and Megatron logits on the same tokens")
    ver.add_argument("--hf-model", required=True)
    ver.add_argument("--megatron-path", required=True)
    ver.add_argument("--prompt", default=None)
    ver.add_argument("--min-cosine", type=float, default=0.9999)
    mrg = sub.add_parser("merge", help="PEFT checkpoint -> plain Megatron checkpoint, adapters folded in (then export)")
    mrg.add_argument("--pretrained", default=None, help="base weights (default: the run's pretrained_checkpoint)")
    ada = sub.add_parser("export-adapter", help="PEFT checkpoint -> HF PEFT adapter folder (PeftModel.from_pretrained)")
    ada.add_argument("--hf-model", default=None, help="HF base model recorded as base_model_name_or_path")
    for p in (mrg, ada):
        p.add_argument("--lora-checkpoint", required=True, help="checkpoint root or iter_XXXXXXX folder of a PEFT run")
        p.add_argument("--output", required=True, help="output folder")
    for p in (imp, exp):
        p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from checkpoints_conv.exporter import export_megatron_to_hf
    from checkpoints_conv.importer import import_hf_to_megatron
    from checkpoints_conv.verify import verify

    try:
        if args.command == "import":
            out = import_hf_to_megatron(args.hf_model, args.megatron_path, tp=args.tp, pp=args.pp, dtype=args.dtype,
                                        overwrite=args.overwrite, show_progress=not args.no_progress)
            print(f"imported {args.hf_model} -> {out} (TP={args.tp}, PP={args.pp})")
        elif args.command == "export":
            out = export_megatron_to_hf(args.megatron_path, args.hf_path, hf_config_source=args.hf_config_source,
                                        overwrite=args.overwrite, max_shard_bytes=args.max_shard_size,
                                        show_progress=not args.no_progress)
            print(f"exported {args.megatron_path} -> {out}")
        elif args.command == "merge":
            from checkpoints_conv.peft_merge import merge_lora_checkpoint

            out = merge_lora_checkpoint(args.lora_checkpoint, args.output, pretrained=args.pretrained)
            print(f"merged {args.lora_checkpoint} -> {out}")
        elif args.command == "export-adapter":
            from checkpoints_conv.peft_export import export_adapter_checkpoint

            out = export_adapter_checkpoint(args.lora_checkpoint, args.output, hf_model=args.hf_model)
            print(f"exported the adapters of {args.lora_checkpoint} -> {out}")
        else:
            result = verify(args.hf_model, args.megatron_path, prompt=args.prompt, min_cosine=args.min_cosine)
            print(result)
            return 0 if result.ok else 1
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
