"""Alpaca rows: ``instruction``, optional ``input``, ``output``, optional ``system``.

Example: ``{"instruction": "Reverse", "input": "abc", "output": "cba"}`` ->
``[user: "Reverse\\n\\nabc", assistant: "cba"]`` (the input is appended after a blank line, as in Alpaca).
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.data.conversation import BadSampleError, Conversation, make_message

NAME = "alpaca"


def matches(columns: set[str]) -> bool:
    return "instruction" in columns and "output" in columns


def to_conversation(row: dict[str, Any], source: str) -> Conversation:
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str):
            raise BadSampleError(source, key, "missing_field", f"alpaca rows need a string '{key}'")
    prompt = row["instruction"]
    if row.get("input"):
        prompt = f"{prompt}\n\n{row['input']}"
    messages = []
    if row.get("system"):
        messages.append(make_message("system", row["system"], source=source, where="system"))
    messages.append(make_message("user", prompt, source=source, where="instruction"))
    messages.append(make_message("assistant", row["output"], source=source, where="output"))
    return Conversation.from_messages(messages, source=source)
