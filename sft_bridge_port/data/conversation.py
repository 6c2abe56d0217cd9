"""The one value every input format becomes: a validated ``Conversation`` of ``Message`` turns.

Format adapters (``sft_bridge_port/data/formats/*.py``) map a raw row to a ``Conversation``; the tokenizers
(``chat_tokenize.py``, ``prompt_tokenize.py``) only ever see this value. Validation happens here, once, so every
format reports bad rows the same way::

    Conversation.from_messages([Message("user", "2+2?"), Message("assistant", "4")], source="a.jsonl:3")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
_THINK_RE = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


class BadSampleError(ValueError):
    """A row that cannot become a training sample; ``reason`` is a short key used to count skips.

    Args:
        source: where the row came from, ``file:line`` or ``dataset[split]:row``.
        field: the offending field (dotted path), e.g. ``messages[2].content``.
        reason: short category (``no_assistant_turn``, ``roles_out_of_order``, ...) used in skip statistics.
        detail: the human explanation, ideally with the fix.
    """

    def __init__(self, source: str, field_name: str, reason: str, detail: str):
        self.source, self.field, self.reason, self.detail = source, field_name, reason, detail
        super().__init__(f"{source}: field '{field_name}': {detail}")


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. ``reasoning`` holds ``<think>`` text kept apart from ``content`` (see ``split_reasoning``)."""

    role: str
    content: str
    reasoning: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None
    name: str | None = None
    tool_call_id: str | None = None


@dataclass(frozen=True)
class Conversation:
    """A checked list of turns plus the tool schemas offered to the model.

    Invariants (checked by ``validate``): optional leading system turns, then a user turn first; an assistant turn
    follows a user or tool turn; a tool turn follows an assistant or tool turn; at least one assistant turn; the
    conversation ends with an assistant turn; no empty content (an assistant turn may be empty only when it makes
    tool calls).
    """

    messages: tuple[Message, ...]
    tools: tuple[dict[str, Any], ...] | None = None
    source: str = "<row>"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_messages(cls, messages: list[Message], tools: list | None = None, source: str = "<row>",
                      extra: dict[str, Any] | None = None) -> Conversation:
        """Build and ``validate``; ``extra`` carries raw row fields for ``prompt_template`` placeholders."""
        conv = cls(tuple(messages), tuple(tools) if tools else None, source, dict(extra or {}))
        conv.validate()
        return conv

    def validate(self) -> None:
        """Raise ``BadSampleError`` naming the message index and field when an invariant above is broken."""
        if not self.messages:
            raise BadSampleError(self.source, "messages", "empty_conversation", "conversation has no turns")
        prev, assistant = None, False
        for i, msg in enumerate(self.messages):  # runs for every row: the error text is built only on error
            role, content = msg.role, msg.content
            if role not in ROLES:
                raise BadSampleError(self.source, f"messages[{i}].role", "unknown_role", f"unknown role {role!r}")
            if not isinstance(content, str):
                raise BadSampleError(self.source, f"messages[{i}].content", "bad_content", "content must be a string")
            if (not content or content.isspace()) and not (role == "assistant" and msg.tool_calls):
                raise BadSampleError(self.source, f"messages[{i}].content", "empty_content", f"empty {role} content")
            if role not in _ALLOWED_AFTER[prev]:
                _check_order(self.source, f"messages[{i}]", prev, role)
            prev, assistant = role, assistant or role == "assistant"
        if not assistant:
            raise BadSampleError(self.source, "messages", "no_assistant_turn",
                                 "no assistant turn, so nothing would be trained")
        if prev != "assistant":
            raise BadSampleError(self.source, f"messages[{len(self.messages) - 1}].role", "roles_out_of_order",
                                 f"conversation ends with a {prev} turn; the last turn must be the assistant's")


_ALLOWED_AFTER = {
    None: ("system", "user"),
    "system": ("system", "user"),
    "user": ("assistant",),
    "assistant": ("user", "tool"),
    "tool": ("tool", "assistant", "user"),
}


def _check_order(source: str, where: str, prev: str | None, role: str) -> None:
    if role not in _ALLOWED_AFTER[prev]:
        after = "at the start" if prev is None else f"after a {prev} turn"
        raise BadSampleError(source, f"{where}.role", "roles_out_of_order",
                             f"a {role} turn cannot come {after} (expected one of {_ALLOWED_AFTER[prev]})")


def split_reasoning(content: str) -> tuple[str | None, str]:
    """Split a leading ``<think>...</think>`` block off an assistant content string.

    Example: ``split_reasoning("<think>a+b</think>\\n\\n7")`` -> ``("a+b", "7")``;
    ``split_reasoning("7")`` -> ``(None, "7")``.
    """
    match = _THINK_RE.match(content)
    if match is None:
        return None, content
    return match.group(1).strip("\n"), content[match.end():]


def make_message(role: str, content: Any, *, source: str, where: str, **extra: Any) -> Message:
    """Build a ``Message``; assistant reasoning is taken from ``reasoning`` or a leading ``<think>`` block.

    OpenAI-style list content (``[{"type": "text", "text": "hi"}]``) is joined; other part types are rejected.
    """
    if content is None:
        content = ""
    if isinstance(content, list):
        content = _join_text_parts(content, source, where)
    if not isinstance(content, str):
        raise BadSampleError(source, f"{where}.content", "bad_content",
                             f"content must be a string, got {type(content).__name__}")
    reasoning = extra.pop("reasoning", None)
    if role == "assistant" and reasoning is None:
        reasoning, content = split_reasoning(content)
    tool_calls = extra.pop("tool_calls", None)
    return Message(role, content, reasoning or None, tuple(tool_calls) if tool_calls else None, **extra)


def _join_text_parts(parts: list, source: str, where: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            texts.append(str(part.get("text", "")))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise BadSampleError(source, f"{where}.content[{j}]", "unsupported_content",
                                 f"content part of type {kind!r} is not supported (text-only SFT)")
    return "".join(texts)
