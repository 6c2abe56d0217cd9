"""Chat-template tokenisation with an exact assistant-only loss mask, for templates with or without
``{% generation %}``.

How the mask is found (no ``{% generation %}`` block needed): render the whole conversation once; for every
assistant turn ``i`` render the prompt ``messages[:i]`` with ``add_generation_prompt=True``. That prompt must be a
prefix of the full text *and* its tokens must equal the first tokens of the full sequence (token-exact check; else
the sample is rejected with the reason). The trained span starts at the assistant content (template boilerplate such
as an empty ``<think></think>`` is skipped; with ``reasoning="keep"`` it starts right after the generation prompt so
the ``<think>`` block is trained) and ends with the first end-of-turn token after the content, inclusive. Nothing
else is trained: not system/user/tool turns, headers, or what the template writes after the end-of-turn token.

That is ``encode_exact``, the reference. ``encode`` / ``encode_many`` give the same masks ~2x faster: the prompt
renders are done once per conversation *shape* with placeholder texts (``chat_skeleton``), each conversation is
rendered once and tokenised in a batch (``chat_fast``); whatever that path cannot place goes to ``encode_exact``.

Example (Llama-3 style; ``^`` marks ``loss_mask == 1``)::

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nhi<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\nhello<|eot_id|>
                                                     ^^^^^ ^^^^^^^^^
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from sft_bridge_port.data.chat_fast import FastChatPath
from sft_bridge_port.data.conversation import BadSampleError, Conversation, Message

# End-of-turn markers of common chat families; the tokenizer's EOS is always one too.
KNOWN_EOT_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "</s>", "<|endoftext|>",
                    "<|end_of_text|>", "<|return|>", "<|call|>", "<｜end▁of▁sentence｜>")
_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class EncodedSample:
    """Token ids and a per-token loss mask *before* the shift (``loss_mask[t] == 1``: token t is a target)."""

    input_ids: np.ndarray  # [L] int64
    loss_mask: np.ndarray  # [L] uint8
    truncated: bool = False


def compile_chat_template(template: str):
    """Compile with transformers' own sandboxed Jinja environment so rendering matches ``apply_chat_template``.

    Two equivalences make rendering ~1.7x faster: the sandbox's attribute check depends only on the object's type and
    the attribute name (jinja's ``is_internal_attribute`` / ``modifies_known_mutable`` look at nothing else), so it is
    cached per (type, name); and the template's globals are frozen into a plain dict (jinja chains them per render).
    Both live on an overlay of transformers' environment, which stays untouched.
    """
    from transformers.utils.chat_template_utils import _compile_jinja_template

    env = _compile_jinja_template(template).environment.overlay()
    checked: dict[tuple[type, str], bool] = {}
    is_safe = env.is_safe_attribute

    def is_safe_attribute(obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        if key not in checked:
            checked[key] = is_safe(obj, attr, value)
        return checked[key]

    env.is_safe_attribute = is_safe_attribute
    compiled = env.from_string(template)
    compiled.globals = dict(compiled.globals)
    return compiled


def eot_token_ids(tokenizer: Any, extra: list[str] | None = None) -> frozenset[int]:
    """Ids that end an assistant turn: the EOS, known family markers present in the vocab, and ``extra``."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in KNOWN_EOT_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for tok in extra or ():
        if tok not in vocab:
            raise ValueError(f"dataset.eot_tokens: {tok!r} is not a token of this tokenizer")
        ids.add(vocab[tok])
    return frozenset(ids)


def backend_of(tokenizer: Any):
    """The Rust ``tokenizers.Tokenizer`` behind a fast HF tokenizer (offsets and speed need it)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer; load it with use_fast=True "
                        "(token offsets are needed to place the assistant mask)")
    return backend


class ChatEncoder:
    """Encode ``Conversation`` values with a chat template (see the module docstring for the mask rule).

    Args:
        tokenizer: a fast HF tokenizer.
        chat_template: Jinja source overriding ``tokenizer.chat_template``.
        reasoning: "keep" renders and trains ``<think>`` reasoning; "strip" drops it from every assistant turn.
        eot_tokens: extra end-of-turn token strings.
        verify_prefix_tokens: check token-exactly that each prompt's tokens prefix the full sequence.
    """

    def __init__(self, tokenizer: Any, chat_template: str | None = None, reasoning: str = "keep",
                 eot_tokens: list[str] | None = None, verify_prefix_tokens: bool = True):
        template = chat_template or getattr(tokenizer, "chat_template", None)
        if not isinstance(template, str) or not template.strip():
            raise ValueError("the tokenizer has no chat template: set dataset.chat_template (a Jinja string or file), "
                             "or use prompt/completion data with dataset.use_chat_template=False")
        self.tokenizer, self.template, self.reasoning = tokenizer, template, reasoning
        self.has_generation_block = bool(_GENERATION_RE.search(template))
        self._compiled = compile_chat_template(template)
        self._backend = backend_of(tokenizer)
        # ids without offsets are ~3x cheaper (tokenizers >= 0.21); offsets are only needed for the full text
        self._encode_fast = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        self._kwargs = dict(tokenizer.special_tokens_map)
        self._eot = eot_token_ids(tokenizer, eot_tokens)
        self._bos = tokenizer.bos_token_id
        self._reasoning_field = "reasoning_content" in template or "thinking" in template
        self._verify = verify_prefix_tokens
        specials = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, specials))) if specials else None
        # Added tokens that the template can write: HF tokenizers encode the text between added tokens piece by
        # piece, so a prompt's tokens are fixed up to its last added token and only the tail needs re-encoding.
        rendered_specials = set(self._kwargs.values()) if self._kwargs else set()
        self._anchors = [t for t in specials if t in template or t in rendered_specials]
        self._fast = FastChatPath(self)

    def render(self, messages: list[dict], tools: list | None, add_generation_prompt: bool) -> str:
        return self._compiled.render(messages=messages, tools=tools, documents=None,
                                     add_generation_prompt=add_generation_prompt, **self._kwargs)

    def message_dict(self, msg: Message) -> dict[str, Any]:
        """The dict the template sees; reasoning is passed as ``reasoning_content`` when the template reads it,
        else inlined as ``<think>...</think>`` before the content (``reasoning="keep"`` only)."""
        out: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.reasoning and self.reasoning == "keep":
            if self._reasoning_field:
                out["reasoning_content"] = msg.reasoning
            else:
                out["content"] = f"<think>\n{msg.reasoning}\n</think>\n\n{msg.content}"
        if msg.tool_calls:
            out["tool_calls"] = [_plain_tool_call(c) for c in msg.tool_calls]
        if msg.name is not None:
            out["name"] = msg.name
        if msg.tool_call_id is not None:
            out["tool_call_id"] = msg.tool_call_id
        return out

    def encode(self, conv: Conversation) -> EncodedSample:
        """Tokenise one conversation; raises ``BadSampleError`` naming the turn when no exact mask exists."""
        result = self.encode_many([conv])[0]
        if isinstance(result, BadSampleError):
            raise result
        return result

    def encode_many(self, convs: list[Conversation]) -> list[EncodedSample | BadSampleError]:
        """Tokenise a batch (one tokenizer call): a sample or the ``BadSampleError`` per conversation, in order.

        Conversations go through the one-render path (``chat_fast``) and fall back to ``encode_exact``, which gives
        the same mask (checked on the first conversation of every shape) and names the reason when there is none.
        """
        results = self._fast.encode_many(convs)
        for n, result in enumerate(results):
            if result is None:
                try:
                    results[n] = self.encode_exact(convs[n])
                except BadSampleError as err:
                    results[n] = err
        return results

    def encode_exact(self, conv: Conversation) -> EncodedSample:
        """The reference method of the module docstring: one render per assistant prefix, each checked token-exactly
        (slower; the fallback of ``encode_many`` and the check of its fast path)."""
        self._check_specials(conv)
        msgs = [self.message_dict(m) for m in conv.messages]
        tools = list(conv.tools) if conv.tools else None
        turns = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        full = self.render(msgs, tools, False)
        prompts = [self.render(msgs[:i], tools, True) for i in turns]
        for n, i in enumerate(turns):
            if not full.startswith(prompts[n]):
                raise BadSampleError(conv.source, f"messages[{i}]", "template_prefix_mismatch",
                                     "the chat template renders the earlier turns differently once this assistant "
                                     "turn follows (e.g. it drops history reasoning); try reasoning='strip'")
        return self.encode_rendered(conv, full, prompts)

    def encode_rendered(self, conv: Conversation, full: str, prompts: list[str], enc: Any = None) -> EncodedSample:
        """``encode_exact`` after rendering: ``full`` is the conversation's text, ``prompts[n]`` (a prefix of it) the
        rendered prompt of its n-th assistant turn, ``enc`` the tokenizer's ``Encoding`` of ``full`` if at hand."""
        turns = [i for i, m in enumerate(conv.messages) if m.role == "assistant"]
        anchors = [self._anchor(p) for p in prompts] if self._verify else []
        if enc is None:
            enc = self._backend.encode(full, add_special_tokens=False)  # offsets needed: char -> token
        tails = self._encode_fast([p[a:] for p, a in zip(prompts, anchors)], add_special_tokens=False)
        ids = enc.ids
        if self._bos is not None and len(ids) > 1 and ids[0] == ids[1] == self._bos:
            raise BadSampleError(conv.source, "<template>", "double_bos",
                                 "the rendered chat starts with two BOS tokens; remove one from the chat template")
        if self._verify:
            ks = [self._prompt_length(conv, i, enc, a, e.ids) for i, a, e in zip(turns, anchors, tails)]
        else:  # trust the char boundary: the first token at or after the prompt's end
            ks = [_token_at_or_after(enc, len(p), len(ids)) for p in prompts]
        mask = np.zeros(len(ids), dtype=np.uint8)
        for n, i in enumerate(turns):
            last = n + 1 == len(turns)
            start, stop = self._turn_span(conv, i, full, (len(prompts[n]), len(full if last else prompts[n + 1])),
                                          ks[n], enc, len(ids) if last else ks[n + 1])
            mask[start:stop] = 1
        return EncodedSample(np.asarray(ids, dtype=np.int64), mask)

    def _anchor(self, prompt: str) -> int:
        """Char offset of the last added token the prompt contains (0 if none): tokens before it cannot change."""
        return max(0, max((prompt.rfind(t) for t in self._anchors), default=0))

    def _prompt_length(self, conv: Conversation, i: int, enc, anchor: int, tail_ids: list[int]) -> int:
        """Number of leading tokens of the full sequence that are the prompt's own tokens, checked token-exactly:
        the prompt's tail (from its last added token) re-encoded alone must match the full sequence there."""
        offset = enc.char_to_token(anchor) if anchor > 0 else 0
        k = (offset or 0) + len(tail_ids)
        if offset is None or enc.ids[offset:k] != tail_ids:
            raise BadSampleError(conv.source, f"messages[{i}]", "token_boundary",
                                 "the prompt's tokens are not a prefix of the full sequence's tokens (a BPE merge "
                                 "crosses the generation-prompt boundary), so the mask would not match inference")
        return k

    def _turn_span(self, conv: Conversation, i: int, full: str, region: tuple[int, int], k: int, enc,
                   limit: int) -> tuple[int, int]:
        """Token range [start, stop) trained for assistant turn ``i`` (content .. end-of-turn token), given the
        chars ``region`` from its prompt's end to the next prompt's end, the prompt's token count ``k`` and the token
        index ``limit`` where the next prompt ends."""
        where, msg = f"messages[{i}]", conv.messages[i]
        start, last = k, k - 1  # tool-call-only turns: train from the generation prompt to the end-of-turn
        text = msg.content.strip()
        if text:
            keep_think = msg.reasoning is not None and self.reasoning == "keep"
            after = full.find(msg.reasoning.strip(), *region) if keep_think else -1
            c = full.find(text, region[0] if after < 0 else after + len(msg.reasoning.strip()), region[1])
            if c < 0:
                raise BadSampleError(conv.source, f"{where}.content", "content_not_rendered",
                                     "the assistant content does not appear verbatim in the rendered template")
            first, last = enc.char_to_token(c), enc.char_to_token(c + len(text) - 1)
            start = k if keep_think else first
        for j in range(last + 1, limit):
            if enc.ids[j] in self._eot:
                return start, j + 1
        raise BadSampleError(conv.source, where, "no_end_of_turn",
                             "no end-of-turn token follows this assistant turn in the rendered template; "
                             "add its end marker to dataset.eot_tokens")

    def _check_specials(self, conv: Conversation) -> None:
        if self._special_re is None:
            return
        for i, m in enumerate(conv.messages):
            for name, text in (("content", m.content), ("reasoning", m.reasoning)):
                hit = self._special_re.search(text) if text else None
                if hit:
                    raise BadSampleError(conv.source, f"messages[{i}].{name}", "special_token_in_text",
                                         f"the text contains the special token {hit.group(0)!r}, which would be "
                                         "tokenised as a control token; remove it from the data")


def _token_at_or_after(enc, char: int, num_tokens: int) -> int:
    """Index of the first token whose text starts at or after ``char`` (``num_tokens`` if none)."""
    for c in range(char, char + 8):
        t = enc.char_to_token(c)
        if t is not None:
            return t if enc.offsets[t][0] >= char else t + 1
    return num_tokens


def _plain_tool_call(call: Any) -> Any:
    """Tool-call arguments given as JSON strings become dicts, which most templates expect (``tojson``)."""
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        fn = dict(call["function"])
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass  # templates that print arguments verbatim still work with the raw string
        return {**call, "function": fn}
    return call
