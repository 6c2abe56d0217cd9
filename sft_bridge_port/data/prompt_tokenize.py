"""Prompt/completion tokenisation without a chat template (Bridge's ``prompt_template`` + ``answer_only_loss``).

The prompt (template text before ``{output}``) and the completion are tokenised separately and concatenated, which
is exactly what the model sees at inference (prompt tokenised alone, then generation); BOS only at the start; EOS
appended and trained. Example with ``prompt_template="{input} {output}"``, input "2+2?", output "4"::

    ids:  <bos> "2+2?" " " | "4" <eos>
    mask:   0      0    0  |  1    1      (answer_only_loss=True; False trains every token)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sft_bridge_port.data.chat_tokenize import EncodedSample, backend_of
from sft_bridge_port.data.conversation import BadSampleError, Conversation


class PromptEncoder:
    """Encode single-turn conversations with a format string.

    Args:
        tokenizer: a fast HF tokenizer.
        prompt_template: must contain ``{output}``; ``{input}`` is the user text (system text, if any, is prepended
            with a blank line); other ``{fields}`` come from the raw row.
        answer_only_loss: train only the completion (+ EOS); else every token.
        add_bos: None = the tokenizer's default special tokens; True/False force a BOS on/off.
        add_eos: append the EOS after the completion (trained, so the model learns to stop).
    """

    def __init__(self, tokenizer: Any, prompt_template: str = "{input} {output}", answer_only_loss: bool = True,
                 add_bos: bool | None = None, add_eos: bool = True):
        self.tokenizer, self.template = tokenizer, prompt_template
        cut = prompt_template.index("{output}")
        self._head, self._tail = prompt_template[:cut], prompt_template[cut:]
        self.answer_only_loss, self.add_bos, self.add_eos = answer_only_loss, add_bos, add_eos
        self._backend = backend_of(tokenizer)
        self._bos, self._eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        if add_eos and self._eos is None:
            raise ValueError("dataset.add_eos=True but the tokenizer has no eos_token; set one or add_eos=False")
        if add_bos and self._bos is None:
            raise ValueError("dataset.add_bos=True but the tokenizer has no bos_token")

    def encode(self, conv: Conversation) -> EncodedSample:
        roles = [m.role for m in conv.messages]
        if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
            raise BadSampleError(conv.source, "messages", "needs_chat_template",
                                 f"prompt_template handles one user turn + one answer, got roles {roles}; "
                                 "use a tokenizer with a chat template (or dataset.chat_template)")
        prompt = "\n\n".join(m.content for m in conv.messages[:-1])
        fields = {**conv.extra, "input": prompt, "output": conv.messages[-1].content}
        try:
            head, tail = self._head.format(**fields), self._tail.format(**fields)
        except KeyError as err:
            raise BadSampleError(conv.source, str(err), "missing_field",
                                 f"prompt_template {self.template!r} needs field {err} that the row lacks") from None
        head_ids = self._backend.encode(head, add_special_tokens=self.add_bos is None).ids
        if self.add_bos and (not head_ids or head_ids[0] != self._bos):
            head_ids = [self._bos] + head_ids
        if self._bos is not None and head_ids[:2] == [self._bos, self._bos]:
            raise BadSampleError(conv.source, "prompt_template", "double_bos",
                                 "the prompt starts with two BOS tokens; remove the BOS text from the template "
                                 "or set dataset.add_bos=False")
        tail_ids = self._backend.encode(tail, add_special_tokens=False).ids + ([self._eos] if self.add_eos else [])
        ids = np.asarray(head_ids + tail_ids, dtype=np.int64)
        mask = np.ones(len(ids), dtype=np.uint8)
        if self.answer_only_loss:
            mask[: len(head_ids)] = 0
        return EncodedSample(ids, mask)
