"""The import floors of docs/CONTRACTS.md, checked on the source: imports point down only.

A newcomer reads the house from the ground up only if no lower floor reaches up; this test fails on the first
upward import (function-level imports included) and names it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sft_bridge_port", "recipes", "checkpoints_conv")

# area -> the project areas it may import (besides itself). Entry points (cli, __main__, demo) may import anything.
ALLOWED: dict[str, set[str]] = {
    "sft_bridge_port.utils": set(),
    "sft_bridge_port.models": {"sft_bridge_port.utils"},
    "sft_bridge_port.data": {"sft_bridge_port.utils"},
    "sft_bridge_port.peft": {"sft_bridge_port.utils"},
    "sft_bridge_port.config": {"sft_bridge_port.models", "sft_bridge_port.data", "sft_bridge_port.peft",
                               "sft_bridge_port.utils"},
    "checkpoints_conv": {"sft_bridge_port.models", "sft_bridge_port.config", "sft_bridge_port.peft",
                         "sft_bridge_port.utils"},
    "sft_bridge_port.training": {"checkpoints_conv", "sft_bridge_port.config", "sft_bridge_port.models",
                                 "sft_bridge_port.data", "sft_bridge_port.peft", "sft_bridge_port.utils"},
    "recipes": {"sft_bridge_port.config", "sft_bridge_port.models", "sft_bridge_port.data", "sft_bridge_port.peft"},
    "sft_bridge_port.stages": {"sft_bridge_port.config", "sft_bridge_port.training"},
}
ENTRY_POINTS = {"sft_bridge_port.__init__", "sft_bridge_port.cli", "sft_bridge_port.__main__", "sft_bridge_port.demo",
                "sft_bridge_port.demo_stages"}


def _area(module: str) -> str:
    parts = module.split(".")
    return f"{parts[0]}.{parts[1]}" if parts[0] == "sft_bridge_port" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def test_imports_point_down_only():
    files = [f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 100  # the whole tree was read, not an empty glob
    violations = []
    for path in files:
        src = _area(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if src in ENTRY_POINTS:
            continue
        assert src in ALLOWED, f"{path}: area {src} has no floor in this test; add it to ALLOWED and CONTRACTS.md"
        for line, name in _imports(path):
            dst = _area(name)
            if dst != src and dst not in ALLOWED[src]:
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({src} -> {dst})")
    assert not violations, "upward imports:\n" + "\n".join(violations)
