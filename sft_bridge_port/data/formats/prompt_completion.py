"""Prompt/completion rows (Bridge's default ``{"input": ..., "output": ...}``) and their common aliases.

Example: ``{"question": "2+2?", "answer": "4"}`` -> ``[user: "2+2?", assistant: "4"]``. An optional ``system``
column becomes a system turn. Without a chat template, ``prompt_tokenize`` renders the pair with
``prompt_template`` instead (Bridge's ``"{input} {output}"``).
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.data.conversation import BadSampleError, Conversation, make_message

NAME = "prompt_completion"
PROMPT_KEYS = ("input", "prompt", "question", "query")
COMPLETION_KEYS = ("output", "response", "answer", "completion")


def matches(columns: set[str]) -> bool:
    return bool(columns & set(PROMPT_KEYS)) and bool(columns & set(COMPLETION_KEYS))


def _pick(row: dict[str, Any], keys: tuple[str, ...], source: str, what: str) -> tuple[str, Any]:
    for key in keys:
        if key in row and row[key] is not None:
            return key, row[key]
    raise BadSampleError(source, "/".join(keys), "missing_field", f"no {what} column (looked for {keys})")


def to_conversation(row: dict[str, Any], source: str, label_key: str | None = None) -> Conversation:
    """Map one row; ``label_key`` (Bridge's option) names the completion column when it is not an alias."""
    prompt_key, prompt = _pick(row, PROMPT_KEYS, source, "prompt")
    keys = (label_key,) if label_key else COMPLETION_KEYS
    out_key, completion = _pick(row, keys, source, "completion")
    messages = []
    if row.get("system"):
        messages.append(make_message("system", row["system"], source=source, where="system"))
    messages.append(make_message("user", prompt, source=source, where=prompt_key))
    messages.append(make_message("assistant", completion, source=source, where=out_key))
    return Conversation.from_messages(messages, source=source, extra=row)
