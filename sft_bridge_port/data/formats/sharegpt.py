"""ShareGPT rows: ``conversations`` (or ``conversation``) of ``{"from": ..., "value": ...}``.

Role names are normalised (case-insensitive): human/user -> user, gpt/assistant/bot/model/chatbot -> assistant,
system -> system, tool/function/observation/ipython -> tool. Bridge's own chat files use ``"User"``/``"Assistant"``
and an optional top-level ``system`` string. Example::

    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    -> [user: "hi", assistant: "hello"]
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.data.conversation import BadSampleError, Conversation, make_message

NAME = "sharegpt"
ROLE_MAP = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "bot": "assistant", "model": "assistant", "chatbot": "assistant",
    "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool", "ipython": "tool",
}


def matches(columns: set[str]) -> bool:
    return "conversations" in columns or "conversation" in columns


def to_conversation(row: dict[str, Any], source: str) -> Conversation:
    key = "conversations" if "conversations" in row else "conversation"
    turns = row.get(key)
    if not isinstance(turns, list):
        raise BadSampleError(source, key, "bad_structure", f"'{key}' must be a list of {{from, value}} objects")
    messages = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        messages.append(make_message("system", row["system"], source=source, where="system"))
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise BadSampleError(source, where, "bad_structure", "each turn must be an object with 'from' and 'value'")
        speaker = turn.get("from", turn.get("role"))
        role = ROLE_MAP.get(str(speaker).strip().lower()) if speaker is not None else None
        if role is None:
            raise BadSampleError(source, f"{where}.from", "unknown_role",
                                 f"unknown speaker {speaker!r}; expected one of {sorted(ROLE_MAP)}")
        messages.append(make_message(role, turn.get("value", turn.get("content")), source=source, where=where))
    return Conversation.from_messages(messages, tools=row.get("tools"), source=source)
