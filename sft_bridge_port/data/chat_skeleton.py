"""Chat-template skeletons: one Jinja render per conversation instead of one per assistant prefix.

The exact mask method (``ChatEncoder.encode_exact``) renders the prompt ``messages[:i]`` of every assistant turn to
learn where its generation prompt ends. Those prompt renders depend on the conversation's *shape* (the roles, and
which turns carry reasoning), not on what the turns say, for every template that only prints message text. So we
render each shape once with placeholder texts, check there that every prompt is a prefix of the full rendering, and
keep the result as a ``str.format`` pattern plus the places where the prompts end. A real conversation of that shape
is then rendered once; it must equal the pattern filled with its texts (so the template printed every text verbatim,
in the placeholders' places), and every char position follows from the texts' lengths. A conversation whose
rendering differs (a template that trims, rewrites or branches on a text) goes back to the exact method.

Example (Llama-3 style, one exchange; ``\\ue000n\\ue001`` is the placeholder of text ``n``: message j's content is
text 2j, its reasoning text 2j+1)::

    rendered:  <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n\\ue0000\\ue001<|eot_id|>
               <|start_header_id|>assistant<|end_header_id|>\\n\\n\\ue0002\\ue001<|eot_id|>
    pattern:   "<|begin_of_text|>...\\n\\n{0}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n{2}<|eot_id|>"
    turn 1:    prompt ends after 1 placeholder + 109 literal chars; its content is placeholder #1 (text 2)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_PH_RE = re.compile("\ue000(\\d+)\ue001")


def placeholder(n: int) -> str:
    """The stand-in for text ``n`` (private-use code points, so no template or data writes it by accident)."""
    return f"\ue000{n}\ue001"


@dataclass(frozen=True, order=True)
class Point:
    """A char position of the rendered pattern: after ``slots`` placeholders and ``chars`` literal characters; in a
    real conversation it lies at ``chars`` + the lengths of the texts filling those first ``slots`` placeholders.
    Both grow along the text, so points of one pattern compare like their positions."""

    chars: int
    slots: int

    def at(self, offsets: list[int]) -> int:
        """The char position in a conversation whose ``Skeleton.slot_offsets`` are ``offsets``."""
        return self.chars + offsets[self.slots]


@dataclass(frozen=True)
class TurnPlan:
    """Where assistant message ``index`` sits in the pattern: its prompt's end and its content placeholder."""

    index: int
    prompt_end: Point
    content: Point


@dataclass(frozen=True)
class Skeleton:
    """A shape's rendering: ``pattern.format(*texts)`` is the full text, ``literals[s]`` the template text before
    placeholder ``s`` (one more at the end), ``slot_texts[s]`` the text index filling placeholder ``s`` (in text
    order), ``turns`` one ``TurnPlan`` per assistant message."""

    pattern: str
    literals: tuple[str, ...]
    slot_texts: tuple[int, ...]
    turns: tuple[TurnPlan, ...]

    def literal_points(self, regex: re.Pattern) -> list[tuple[Point, Point, str]]:
        """(start, end, text) of every match of ``regex`` inside the template's own text, in order."""
        out, chars = [], 0
        for s, lit in enumerate(self.literals):
            out += [(Point(chars + m.start(), s), Point(chars + m.end(), s), m.group()) for m in regex.finditer(lit)]
            chars += len(lit)
        return out

    def slot_offsets(self, texts: list[str]) -> list[int]:
        """Cumulative real length of the texts filling the first ``s`` placeholders, for ``s = 0..num_slots``."""
        out, total = [0], 0
        for t in self.slot_texts:
            total += len(texts[t])
            out.append(total)
        return out


def build_skeleton(render: Callable[[list[dict], bool], str], messages: list[dict],
                   assistant_turns: list[int]) -> Skeleton | None:
    """Render a shape (``messages`` hold placeholders) in full and at every assistant prefix.

    Args:
        render: ``render(messages, add_generation_prompt) -> str`` with the chat template.
        messages: the template's message dicts with ``placeholder(n)`` texts.
        assistant_turns: indices of the assistant messages.

    Returns:
        The skeleton, or None when this shape needs the exact per-prefix method: a prompt is not a prefix of the full
        rendering, a prompt ends inside a placeholder, or an assistant content is not printed exactly once after its
        prompt.
    """
    full = render(messages, False)
    pieces = _PH_RE.split(full)
    literals, slot_texts = pieces[0::2], [int(v) for v in pieces[1::2]]
    starts, pos = [], 0  # placeholder start positions in the pattern's own (placeholder) coordinates
    for s, text in enumerate(slot_texts):
        pos += len(literals[s])
        starts.append(pos)
        pos += len(placeholder(text))
    turns = []
    for i in assistant_turns:
        prompt = render(messages[:i], True)
        if not full.startswith(prompt):
            return None
        end = _point(len(prompt), starts, slot_texts)
        slots = [s for s, t in enumerate(slot_texts) if t == 2 * i]
        if end is None or len(slots) != 1 or starts[slots[0]] < len(prompt):
            return None
        turns.append(TurnPlan(i, end, _point(starts[slots[0]], starts, slot_texts)))
    pattern = "".join(lit.replace("{", "{{").replace("}", "}}") + (f"{{{slot_texts[s]}}}" if s < len(slot_texts)
                                                                   else "") for s, lit in enumerate(literals))
    return Skeleton(pattern, tuple(literals), tuple(slot_texts), tuple(turns))


def _point(pos: int, starts: list[int], slot_texts: list[int]) -> Point | None:
    """``pos`` (placeholder coordinates) as a ``Point``; None if it falls inside a placeholder."""
    before, ph_chars = 0, 0
    for start, text in zip(starts, slot_texts):
        end = start + len(placeholder(text))
        if end <= pos:
            before, ph_chars = before + 1, ph_chars + end - start
        elif start < pos:
            return None
    return Point(pos - ph_chars, before)
