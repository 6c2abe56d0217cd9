"""OpenAI / Hugging Face chat rows: ``messages`` of ``{"role", "content"}``, optional ``tools`` and tool calls.

Assistant turns may carry ``tool_calls`` (content may then be empty) and ``reasoning_content`` (or ``reasoning`` /
``thinking``); tool turns may carry ``tool_call_id`` and ``name``. Example::

    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    -> [user: "hi", assistant: "hello"]
"""

from __future__ import annotations

from typing import Any

from sft_bridge_port.data.conversation import BadSampleError, Conversation, Message, make_message

NAME = "openai_messages"
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
_PLAIN_ROLES = frozenset(("system", "user", "assistant", "tool"))  # already normalised: no mapping needed


def matches(columns: set[str]) -> bool:
    return "messages" in columns


def to_conversation(row: dict[str, Any], source: str) -> Conversation:
    turns = row.get("messages")
    if not isinstance(turns, list):
        raise BadSampleError(source, "messages", "bad_structure", "'messages' must be a list of {role, content}")
    messages = []
    for i, turn in enumerate(turns):
        if type(turn) is dict and len(turn) == 2:  # noqa: E721 -- the common {"role", "content"} turn, fast
            role, content = turn.get("role"), turn.get("content")
            plain = type(role) is str and role in _PLAIN_ROLES and type(content) is str  # noqa: E721
            if plain and not (role == "assistant" and "<think>" in content):
                messages.append(Message(role, content))
                continue
        where = f"messages[{i}]"
        if not isinstance(turn, dict) or "role" not in turn:
            raise BadSampleError(source, where, "bad_structure", "each message must be an object with a 'role'")
        role = str(turn["role"]).strip().lower()
        role = "tool" if role in ("function", "ipython") else role
        extra: dict[str, Any] = {}
        reasoning = next((turn[k] for k in _REASONING_KEYS if turn.get(k)), None)
        if reasoning is not None:
            extra["reasoning"] = reasoning
        if turn.get("tool_calls"):
            extra["tool_calls"] = turn["tool_calls"]
        for key in ("name", "tool_call_id"):
            if turn.get(key) is not None:
                extra[key] = str(turn[key])
        messages.append(make_message(role, turn.get("content"), source=source, where=where, **extra))
    tools = row.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadSampleError(source, "tools", "bad_structure", "'tools' must be a list of JSON schemas")
    return Conversation.from_messages(messages, tools=tools, source=source)
