"""The README's Configuration example runs as written (docs that drift are a review finding)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def test_configuration_section_python_example_runs():
    section = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], "README.md#configuration", "exec"), {})
