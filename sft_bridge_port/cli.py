"""The ``sft-bridge-port`` command: argument parsing only; the work happens in the modules it calls.

    sft-bridge-port recipes                                   # names + one-line descriptions
    sft-bridge-port show-config --recipe NAME [k=v ...]       # the resolved YAML
    sft-bridge-port run --recipe NAME [--config F] [--stage sft|peft] [k=v ...]
    torchrun --nproc-per-node 8 -m sft_bridge_port run --recipe llama3_8b_sft train.train_iters=100
    sft-bridge-port demo                                      # end-to-end tiny run on CPU
    sft-bridge-port data preview|pack ...                     # dataset tools

Exit codes: 0 success, 2 bad usage or bad configuration (message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import Any, Optional, Sequence

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake to report in one line with exit code 2."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo owns its flags
        return _demo(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (UsageError, ValueError, TypeError) as err:
        if isinstance(err, (ValueError, TypeError)) and not getattr(args, "config_stage", False):
            raise
        print(f"sft-bridge-port {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree; ``data`` is mounted from ``sft_bridge_port.data.cli.register`` when present."""
    parser = argparse.ArgumentParser(prog="sft-bridge-port", description="SFT / PEFT on megatron-core with Bridge recipes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("recipes", help="list recipe names with a one-line description")
    p.set_defaults(func=_recipes)
    for name, helptext, func in (("show-config", "print a recipe's configuration as YAML", _show_config),
                                 ("run", "train with a recipe", _run)):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--recipe", required=True, help="recipe name, see `sft-bridge-port recipes`")
        p.add_argument("--hf-path", default=None, help="HF folder or hub id passed to the recipe as hf_path=")
        p.add_argument("--config", default=None, help="YAML file applied before the overrides")
        p.add_argument("overrides", nargs="*", help="Hydra-style key=value overrides, e.g. train.train_iters=100")
        if name == "run":
            p.add_argument("--stage", default=None, help="sft | peft (default: peft when the config has peft)")
        else:
            p.add_argument("--effective", action="store_true", help="also apply runtime_config_update (effective values)")
            p.add_argument("--world-size", type=int, default=None, help="world size for --effective (default: $WORLD_SIZE or 1)")
        p.set_defaults(func=func)
    sub.add_parser("demo", help="tiny end-to-end run: build, import, finetune, export, generate (CPU ok)")
    _mount_data(sub)
    return parser


def _mount_data(sub: Any) -> None:
    try:
        from sft_bridge_port.data.cli import register
    except ModuleNotFoundError as err:
        if err.name not in ("sft_bridge_port.data.cli", "sft_bridge_port.data"):
            raise
        p = sub.add_parser("data", help="dataset tools (not available in this installation)")
        p.set_defaults(func=_missing("data tools", "sft_bridge_port.data.cli"))
        return
    register(sub)


def _missing(what: str, module: str) -> Any:
    def handler(args: argparse.Namespace) -> int:
        print(f"sft-bridge-port: {what} are not available: module {module} is missing", file=sys.stderr)
        return EXIT_USAGE

    return handler


def _recipes(args: argparse.Namespace) -> int:
    from recipes import list_recipes

    entries = list_recipes()
    width = max(map(len, entries), default=0)
    for name, doc in entries.items():
        print(f"{name:<{width}}  {doc}")
    return 0


def _build_config(args: argparse.Namespace) -> Any:
    """Recipe -> YAML file -> overrides (priority CLI > YAML > recipe)."""
    from recipes import get_recipe, list_recipes
    from sft_bridge_port.config import process_config_with_overrides

    args.config_stage = True  # errors from here on are configuration errors: report, exit 2
    try:
        recipe = get_recipe(args.recipe)
    except KeyError:
        close = difflib.get_close_matches(args.recipe, list(list_recipes()), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `sft-bridge-port recipes`"
        raise UsageError(f"unknown recipe {args.recipe!r}{hint}") from None
    cfg = recipe(hf_path=args.hf_path) if args.hf_path else recipe()
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UsageError(f"overrides must look like key=value, got {bad}")
    return process_config_with_overrides(cfg, args.config, args.overrides)


def _show_config(args: argparse.Namespace) -> int:
    cfg = _build_config(args)
    if args.effective:
        from sft_bridge_port.config import runtime_config_update

        runtime_config_update(cfg, world_size=args.world_size)
    sys.stdout.write(cfg.to_yaml())
    return 0


def _run(args: argparse.Namespace) -> int:
    from sft_bridge_port.stages import run, select_stage

    cfg = _build_config(args)
    select_stage(cfg, args.stage)  # a wrong stage is a usage error; training errors below are not
    args.config_stage = False
    run(cfg, stage=args.stage)
    return 0


def _demo(argv: list[str]) -> int:
    try:
        from sft_bridge_port.demo import main as demo_main
    except ModuleNotFoundError as err:
        if err.name != "sft_bridge_port.demo":
            raise
        print("sft-bridge-port demo: the demo is not available in this installation "
              "(module sft_bridge_port.demo is missing)", file=sys.stderr)
        return EXIT_USAGE
    return int(demo_main(argv) or 0)
