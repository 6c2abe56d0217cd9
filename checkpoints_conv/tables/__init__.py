"""Registry of mapping tables, keyed by the HF ``architectures[0]`` name in config.json."""

from __future__ import annotations

from checkpoints_conv.mapping import Table
from checkpoints_conv.tables import llama, mistral, qwen2, qwen3

TABLES: tuple[Table, ...] = (llama.TABLE, qwen2.TABLE, qwen3.TABLE, mistral.TABLE)
_BY_ARCH = {arch: t for t in TABLES for arch in t.architectures}


def supported_architectures() -> list[str]:
    """HF architecture names that have a table, e.g. ``["LlamaForCausalLM", ...]``."""
    return sorted(_BY_ARCH)


def get_table(architecture: str) -> Table:
    """The table for an HF architecture name.

    Raises:
        ValueError: unsupported architecture, listing the supported ones.
    """
    try:
        return _BY_ARCH[architecture]
    except KeyError:
        raise ValueError(
            f"unsupported architecture {architecture!r} (config.json 'architectures'); supported: "
            f"{', '.join(supported_architectures())}"
        ) from None
