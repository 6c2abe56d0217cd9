"""Format adapters: one file per raw row format, each mapping a row to a ``Conversation``.

``detect_format(columns)`` picks an adapter from a row's keys (``messages`` -> openai_messages,
``conversations`` -> sharegpt, ``instruction`` -> alpaca, prompt/completion aliases -> prompt_completion);
``FinetuningDatasetConfig.format`` overrides it.
"""

from __future__ import annotations

from typing import Any, Callable

from sft_bridge_port.data.conversation import BadSampleError, Conversation
from sft_bridge_port.data.formats import alpaca, openai_messages, prompt_completion, sharegpt

# Detection order matters: a row with both `messages` and `input` is a chat row.
ADAPTERS = {m.NAME: m for m in (openai_messages, sharegpt, alpaca, prompt_completion)}
ALIASES = {"openai": "openai_messages", "messages": "openai_messages", "chat": "openai_messages",
           "input_output": "prompt_completion", "prompt": "prompt_completion"}


def resolve_format_name(name: str) -> str:
    """Canonical adapter name for ``name`` (aliases accepted), or ValueError listing the choices."""
    canonical = ALIASES.get(name, name)
    if canonical not in ADAPTERS:
        raise ValueError(f"unknown dataset format {name!r}; choose one of {sorted(ADAPTERS) + sorted(ALIASES)} "
                         "(or leave format=None to detect it from the columns)")
    return canonical


def detect_format(columns: set[str] | list[str], source: str = "<row>") -> str:
    """Adapter name for a row with these keys, or ``BadSampleError`` naming the columns seen."""
    cols = set(columns)
    for name, module in ADAPTERS.items():
        if module.matches(cols):
            return name
    raise BadSampleError(source, ",".join(sorted(cols)) or "<none>", "unknown_format",
                         "cannot detect the format from these columns; expected 'messages', 'conversations', "
                         "'instruction'+'output', or a prompt column (input/prompt/question/query) with a completion "
                         "column (output/response/answer/completion); or set the dataset 'format' option")


def row_to_conversation(row: Any, source: str, fmt: str | None = None, label_key: str | None = None) -> Conversation:
    """Map one raw row with the named adapter (detected when ``fmt`` is None)."""
    if not isinstance(row, dict):
        raise BadSampleError(source, "<row>", "bad_structure", f"a row must be a JSON object, got {type(row).__name__}")
    name = resolve_format_name(fmt) if fmt else detect_format(row.keys(), source)
    if name == prompt_completion.NAME:
        return prompt_completion.to_conversation(row, source, label_key=label_key)
    convert: Callable[[dict, str], Conversation] = ADAPTERS[name].to_conversation
    return convert(row, source)


__all__ = ["ADAPTERS", "BadSampleError", "detect_format", "resolve_format_name", "row_to_conversation"]
