"""The batched one-render path of ``ChatEncoder``: the masks of the exact per-prefix method at a fraction of the work.

Per conversation: one Jinja render, checked against its shape's skeleton (``chat_skeleton``), which places every
prompt end and content; one tokenizer call per batch of conversations, ids only. Char positions become token indices
through the added tokens (``<|eot_id|>``, ``<|im_start|>``, ...): the template writes them and data may not contain
them, so the k-th added token of the template's text is the k-th added-token id of the ids (checked for every
conversation). A prompt's token count is then checked as the exact method checks it: the prompt's text from its last
added token, tokenised alone, must equal the full sequence's tokens from that added token on (that text is mostly
template text, tokenised once per shape). The trained span starts at the content (at the prompt end when reasoning is
kept) and ends with the first end-of-turn token after the content, as in the exact method.

Example (Llama-3 style, ``user: hi / assistant: hello``)::

    added tokens in the template text: <|begin_of_text|> <|start_header_id|> <|end_header_id|> <|eot_id|> ...
    their ids found at token positions:        0                1                  3              5  ...
    prompt 1 = text up to "...assistant<|end_header_id|>\\n\\n": last added token #6 at position 8, tail
    "<|end_header_id|>\\n\\n" = 2 tokens -> the prompt is 10 tokens; content "hello" starts there; the first
    <|eot_id|> after it (#7, position 11) closes the span: loss_mask[10:12] = 1

Whatever does not fit (a template that rewrites a text, a token merging across the prompt's end, ...) falls back,
first to the exact method's char offsets on the same text, then to the exact method itself, which also names the
error. The first conversation of every shape is encoded both ways; if they differ, that shape always takes the exact
method.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from sft_bridge_port.data.chat_skeleton import Point, Skeleton, build_skeleton, placeholder
from sft_bridge_port.data.conversation import BadSampleError, Conversation, Message

if TYPE_CHECKING:
    from sft_bridge_port.data.chat_tokenize import ChatEncoder, EncodedSample

_MAX_SHAPES = 4096
_MAX_TAILS = 1 << 16
_Tail = Union[list, str, None]  # token ids (template text), a text to tokenise, or None (starts at the prompt end)


@dataclass(frozen=True)
class _Span:
    """From the shape's added token ``special`` (-1: the text start) to ``end``; ``ids`` when it is template text."""

    special: int
    start: Point
    end: Point
    ids: list[int] | None


@dataclass(frozen=True)
class _TurnTokens:
    index: int  # message index
    prompt: _Span  # to the prompt's end
    content: _Span  # to the content placeholder's start
    eot: int  # the shape's added token that ends the turn


@dataclass
class _Shape:
    skeleton: Skeleton | None
    special_ids: list[int] = field(default_factory=list)
    turns: list[_TurnTokens] = field(default_factory=list)
    audited: bool = False
    hits: int = 0  # conversations whose ids alone gave the mask
    misses: int = 0  # ... that needed char offsets

    @property
    def wants_offsets(self) -> bool:
        """Over a quarter of misses: tokenising with offsets at once is cheaper than tokenising twice."""
        return 4 * self.misses > self.hits + self.misses


@dataclass
class _Plan:
    """Text-side result for one conversation: its text, shape, and per turn the prompt tail and the start tail."""

    full: str
    shape: _Shape
    offsets: list[int]
    tails: list[tuple[_Tail, _Tail, int]]  # (prompt tail, start tail, content start char) per turn


class FastChatPath:
    """Shape skeletons, tail tokens and the batch encode for one ``ChatEncoder``."""

    def __init__(self, encoder: ChatEncoder):
        from sft_bridge_port.data.chat_tokenize import EncodedSample  # imported here: chat_tokenize imports us

        self.enc, self._sample_type = encoder, EncodedSample
        added = encoder.tokenizer.get_added_vocab()
        anchors = [t for t in encoder._anchors if t in added]
        # every end-of-turn id must be an added token: then none can hide inside a content's tokens
        self.enabled = bool(anchors) and all(i in set(added.values()) for i in encoder._eot)
        size = max(encoder._backend.get_vocab_size(with_added_tokens=True), max(added.values(), default=0) + 1)
        self._is_added = np.zeros(size, dtype=bool)
        self._is_added[list(added.values())] = True
        self._anchor_re = re.compile("|".join(map(re.escape, anchors))) if anchors else None
        self._added = added
        self._shapes: dict[tuple, _Shape] = {}
        self._tails: dict[str, list[int]] = {}

    def encode_many(self, convs: list[Conversation]) -> list[EncodedSample | BadSampleError | None]:
        """One result per conversation: a sample, the ``BadSampleError`` of a rejected one, or None (use the exact
        method)."""
        out: list[Any] = [None] * len(convs)
        plans: list[tuple[int, _Plan]] = []
        for n, conv in enumerate(convs):
            try:
                plan = self._plan(conv)
            except BadSampleError as err:
                out[n] = err
                continue
            if plan is not None:
                plans.append((n, plan))
        if not plans:
            return out
        texts = {t for _, p in plans for turn in p.tails for t in turn[:2] if isinstance(t, str)}
        if len(self._tails) + len(texts) > _MAX_TAILS:
            self._tails.clear()
        missing = sorted(texts - self._tails.keys())
        by_ids = [(n, p) for n, p in plans if not p.shape.wants_offsets]
        by_offsets = [(n, p) for n, p in plans if p.shape.wants_offsets]
        encodings = self.enc._encode_fast([p.full for _, p in by_ids] + missing, add_special_tokens=False)
        for text, e in zip(missing, encodings[len(by_ids):]):
            self._tails[text] = e.ids
        for (n, plan), e in zip(by_ids, encodings):
            sample = self._sample(plan, e.ids)
            plan.shape.hits += sample is not None
            if sample is None:  # e.g. a content whose first token merges with the template text before it
                plan.shape.misses += 1
                by_offsets.append((n, plan))
            else:
                out[n] = self._audit(convs[n], plan.shape, sample)
        # with char offsets (shapes that often miss: templates such as Mistral's "[/INST] " + content, where the
        # space merges into the content's first token) a span starts at the token holding the content's first char
        encodings = self.enc._backend.encode_batch([p.full for _, p in by_offsets], add_special_tokens=False)
        for (n, plan), e in zip(by_offsets, encodings):
            sample = self._sample(plan, e.ids, e)
            out[n] = self._audit(convs[n], plan.shape, sample or self._with_offsets(convs[n], plan, e))
        return out

    def _plan(self, conv: Conversation) -> _Plan | None:
        enc = self.enc
        enc._check_specials(conv)
        if not self.enabled or conv.tools:
            return None
        keep = enc.reasoning == "keep"
        key, texts = [], []
        for m in conv.messages:
            if m.tool_calls or m.name is not None or m.tool_call_id is not None:
                return None
            if keep and m.reasoning is not None:
                key.append(m.role + "+reasoning")
                texts += (m.content, m.reasoning)
            else:
                key.append(m.role)
                texts += (m.content, "")
        shape = self._shapes.get(tuple(key)) or self._new_shape(tuple(key))
        sk = shape.skeleton
        if sk is None:
            return None
        full = enc.render([enc.message_dict(m) for m in conv.messages], None, False)
        if full != sk.pattern.format(*texts):
            return None  # the template changed a text (trim, rewrite, branch): exact method
        offsets = sk.slot_offsets(texts)
        tails = []
        for t in shape.turns:
            content = texts[2 * t.index]
            lead = len(content) - len(content.lstrip())
            prompt = t.prompt.ids if t.prompt.ids is not None else self._text(full, offsets, t.prompt, 0)
            if texts[2 * t.index + 1] or (lead == 0 and t.content.end == t.prompt.end):
                start = None  # reasoning kept, or the content right at the prompt's end: the span starts there
            elif lead == 0 and t.content.ids is not None:
                start = t.content.ids
            else:
                start = self._text(full, offsets, t.content, lead)
            tails.append((prompt, start, t.content.end.at(offsets) + lead))
        return _Plan(full, shape, offsets, tails)

    @staticmethod
    def _text(full: str, offsets: list[int], span: _Span, extra: int) -> str:
        return full[span.start.at(offsets):span.end.at(offsets) + extra]

    def _new_shape(self, key: tuple) -> _Shape:
        if len(self._shapes) >= _MAX_SHAPES:
            return _Shape(None)  # that many shapes: the data is not repetitive enough to pay for skeletons
        roles = [k.partition("+")[0] for k in key]
        msgs = [Message(role, placeholder(2 * j), placeholder(2 * j + 1) if "+" in k else None)
                for j, (role, k) in enumerate(zip(roles, key))]
        try:
            skeleton = build_skeleton(lambda m, gen: self.enc.render(m, None, gen),
                                      [self.enc.message_dict(m) for m in msgs],
                                      [j for j, role in enumerate(roles) if role == "assistant"])
        except Exception:  # noqa: BLE001 -- a template that rejects placeholders: the exact method renders real text
            skeleton = None
        shape = self._shapes[key] = _Shape(skeleton)
        if skeleton is not None:
            self._plan_tokens(shape, skeleton)
        return shape

    def _plan_tokens(self, shape: _Shape, sk: Skeleton) -> None:
        """Per turn: the added token each tail starts from, the tails' ids where they are template text, and the
        end-of-turn token after the content (no such token: the shape takes the exact method, which says so)."""
        specials = sk.literal_points(self._anchor_re)
        shape.special_ids = [self._added[text] for _, _, text in specials]
        joined = "".join(sk.literals)

        def span(end: Point) -> _Span:
            a = max((n for n, (_, e, _) in enumerate(specials) if e <= end), default=-1)
            start = specials[a][0] if a >= 0 else Point(0, 0)
            const = start.slots == end.slots
            ids = self.enc._encode_fast([joined[start.chars:end.chars]], add_special_tokens=False)[0].ids
            return _Span(a, start, end, ids if const else None)

        for t in sk.turns:
            eot = [n for n, (s, _, _) in enumerate(specials) if s.slots > t.content.slots
                   and shape.special_ids[n] in self.enc._eot]
            if not eot:
                shape.skeleton = None
                return
            shape.turns.append(_TurnTokens(t.index, span(t.prompt_end), span(t.content), eot[0]))

    def _tail_ids(self, tail: _Tail) -> list[int]:
        return self._tails[tail] if isinstance(tail, str) else tail

    def _sample(self, plan: _Plan, ids: list[int], encoding: Any = None) -> EncodedSample | None:
        """The sample from the ids of ``plan.full`` (None: use the exact method's offsets); with ``encoding`` (char
        offsets) a span starts at the token holding the content's first char, as in the exact method."""
        bos = self.enc._bos
        if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
            return None  # the exact method reports it
        arr = np.asarray(ids, dtype=np.int64)
        where = np.flatnonzero(self._is_added[arr])
        shape = plan.shape
        if len(where) != len(shape.special_ids) or arr[where].tolist() != shape.special_ids:
            return None  # the tokenizer split added tokens differently from the template text
        where = where.tolist()
        spans = []
        for t, (prompt, start, char) in zip(shape.turns, plan.tails):
            a = where[t.prompt.special] if t.prompt.special >= 0 else 0
            tail = self._tail_ids(prompt)
            k = a + len(tail)
            if ids[a:k] != tail:
                return None  # a merge across the prompt's end: the exact method names it
            if start is not None and encoding is not None:
                first = encoding.char_to_token(char)
                if first is None:
                    return None
                spans.append((k, first, where[t.eot]))
            elif start is not None:
                a = where[t.content.special] if t.content.special >= 0 else 0
                tail = self._tail_ids(start)
                if ids[a:a + len(tail)] != tail:
                    return None
                spans.append((k, a + len(tail), where[t.eot]))
            else:
                spans.append((k, k, where[t.eot]))
        mask = np.zeros(len(ids), dtype=np.uint8)
        for n, (_, start, eot) in enumerate(spans):
            if eot >= (spans[n + 1][0] if n + 1 < len(spans) else len(ids)):
                return None
            mask[start:eot + 1] = 1
        return self._sample_type(arr, mask)

    def _with_offsets(self, conv: Conversation, plan: _Plan, encoding: Any = None) -> EncodedSample | None:
        """The exact method's token mapping (char offsets) on the prompts the skeleton located: no extra renders."""
        prompts = [plan.full[:t.prompt.end.at(plan.offsets)] for t in plan.shape.turns]
        try:
            return self.enc.encode_rendered(conv, plan.full, prompts, encoding)
        except BadSampleError:
            return None  # the exact method renders and names the reason

    def _audit(self, conv: Conversation, shape: _Shape, sample: EncodedSample | None) -> Any:
        """The first conversation of a shape is also encoded by the exact method; if they differ, the shape takes
        the exact method from then on, and the exact result stands."""
        if sample is None or shape.audited:
            return sample
        shape.audited = True
        try:
            exact = self.enc.encode_exact(conv)
        except BadSampleError as err:
            shape.skeleton = None
            return err
        same = np.array_equal(exact.input_ids, sample.input_ids) and np.array_equal(exact.loss_mask, sample.loss_mask)
        if not same:
            shape.skeleton = None
            return exact
        return sample
