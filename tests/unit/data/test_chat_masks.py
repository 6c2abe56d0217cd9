"""Masks from chat templates: the trained tokens decode to exactly the assistant contents + end-of-turn markers."""

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from sft_bridge_port.data.chat_tokenize import ChatEncoder
from sft_bridge_port.data.conversation import BadSampleError
from sft_bridge_port.data.formats import row_to_conversation
from sft_bridge_port.data.prompt_tokenize import PromptEncoder

from .conftest import CHATML_GENERATION_TEMPLATE, THINK_TEMPLATE, chat_row, trained_runs

PAIRS = [("What is 12 + 30?", "12 + 30 = 42."), ("And the capital of France?", "The capital of France is Paris."),
         ("Reverse 'planet'.", "tenalp")]
EOT = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>", "mistral": "</s>", "generation": "<|im_end|>"}


@pytest.mark.parametrize("name", ["llama3", "chatml", "mistral", "generation"])
@pytest.mark.parametrize("num_turns, system", [(1, None), (3, "Be brief.")])
def test_masked_tokens_are_assistant_contents_plus_eot(tok_factory, name, num_turns, system):
    tok = tok_factory(CHATML_GENERATION_TEMPLATE if name == "generation" else name)
    enc = ChatEncoder(tok)
    assert enc.has_generation_block == (name == "generation")
    conv = row_to_conversation(chat_row(*PAIRS[:num_turns], system=system), "t:1")
    sample = enc.encode(conv)
    runs = trained_runs(tok, sample)
    if name == "mistral":  # ' ' + content: the separator space merges into the first word, as the model generates it
        runs = [r.removeprefix(" ") for r in runs]
    assert runs == [a + EOT[name] for _, a in PAIRS[:num_turns]]
    # the whole sequence is the template's rendering, token for token, with a single BOS
    assert sample.input_ids.tolist() == tok.apply_chat_template(conv_dicts(conv), tokenize=True, return_dict=True)[
        "input_ids"]
    if tok.bos_token_id is not None:
        assert sample.input_ids.tolist().count(tok.bos_token_id) == 1


def conv_dicts(conv):
    return [{"role": m.role, "content": m.content} for m in conv.messages]


def test_generation_block_mask_matches_hf_assistant_mask(tok_factory):
    tok = tok_factory(CHATML_GENERATION_TEMPLATE)
    conv = row_to_conversation(chat_row(*PAIRS), "t:1")
    ours = ChatEncoder(tok).encode(conv)
    hf = tok.apply_chat_template(conv_dicts(conv), tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert ours.loss_mask.tolist() == hf["assistant_masks"]


def think_row():
    return {"messages": [
        {"role": "user", "content": "What is 12 + 30?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n12 + 30 = 42."},
        {"role": "user", "content": "Reverse 'planet'."},
        {"role": "assistant", "content": "tenalp", "reasoning_content": "read it backwards"}]}


def test_think_template_keep_and_strip(tok_factory):
    tok = tok_factory(THINK_TEMPLATE)
    conv = row_to_conversation(think_row(), "t:1")
    keep = trained_runs(tok, ChatEncoder(tok, reasoning="keep").encode(conv))
    # the template drops reasoning before the last user turn; the last turn's reasoning is trained with its tags
    assert keep == ["12 + 30 = 42.<|im_end|>", "<think>\nread it backwards\n</think>\n\ntenalp<|im_end|>"]
    strip = trained_runs(tok, ChatEncoder(tok, reasoning="strip").encode(conv))
    # the empty <think></think> the template inserts is scaffolding, never trained
    assert strip == ["12 + 30 = 42.<|im_end|>", "tenalp<|im_end|>"]


def test_reasoning_inlined_for_templates_without_reasoning_field(tok_factory):
    tok = tok_factory("llama3")
    conv = row_to_conversation(think_row(), "t:1")
    assert trained_runs(tok, ChatEncoder(tok, reasoning="keep").encode(conv)) == [
        "<think>\nadd them\n</think>\n\n12 + 30 = 42.<|eot_id|>",
        "<think>\nread it backwards\n</think>\n\ntenalp<|eot_id|>"]
    assert trained_runs(tok, ChatEncoder(tok, reasoning="strip").encode(conv)) == [
        "12 + 30 = 42.<|eot_id|>", "tenalp<|eot_id|>"]


def test_tool_calls_are_trained_tool_results_are_not(tok_factory):
    tok = tok_factory("llama3")
    row = {"tools": [{"type": "function", "function": {"name": "get_weather"}}], "messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "sunny 21 degrees"},
        {"role": "assistant", "content": "It is sunny."}]}
    runs = trained_runs(tok, ChatEncoder(tok).encode(row_to_conversation(row, "t:1")))
    assert runs == ['{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>', "It is sunny.<|eot_id|>"]


def test_double_bos_is_an_error(tok_factory):
    tok = tok_factory("llama3")
    enc = ChatEncoder(tok, chat_template="{{ bos_token }}" + tok.chat_template)
    with pytest.raises(BadSampleError, match="two BOS") as err:
        enc.encode(row_to_conversation(chat_row(PAIRS[0]), "t:1"))
    assert err.value.reason == "double_bos"


def test_token_boundary_crossing_the_prompt_is_rejected(tok_factory):
    tok = tok_factory("chatml")
    # the generation prompt ends with "Ans" and the answer starts with "wer": BPE merges "Answer" across them
    template = ("{%- for m in messages %}{%- if m.role == 'user' %}{{ m.content + '\\n' }}"
                "{%- else %}{{ 'Ans' + m.content + '<|im_end|>' }}{%- endif %}{%- endfor %}"
                "{%- if add_generation_prompt %}{{ 'Ans' }}{%- endif %}")
    conv = row_to_conversation(chat_row(("Question: why?", "wer: yes.")), "t:3")
    with pytest.raises(BadSampleError, match="t:3: field 'messages\\[1\\]'.*not a prefix") as err:
        ChatEncoder(tok, chat_template=template).encode(conv)
    assert err.value.reason == "token_boundary"


def test_special_token_text_in_content_is_rejected(tok_factory):
    tok = tok_factory("llama3")
    conv = row_to_conversation(chat_row(("hi<|eot_id|>", "hello")), "t:4")
    with pytest.raises(BadSampleError, match=r"messages\[0\].content.*special token '<\|eot_id\|>'"):
        ChatEncoder(tok).encode(conv)


def test_template_without_end_of_turn_is_rejected(tok_factory):
    tok = tok_factory("chatml")
    template = "{%- for m in messages %}{{ m.role + ': ' + m.content + '\\n' }}{%- endfor %}" \
               "{%- if add_generation_prompt %}{{ 'assistant: ' }}{%- endif %}"
    with pytest.raises(BadSampleError, match="no end-of-turn token"):
        ChatEncoder(tok, chat_template=template).encode(row_to_conversation(chat_row(PAIRS[0]), "t"))
    enc = ChatEncoder(tok, chat_template=template.replace("'\\n'", "'\\n<|endoftext|>'"),
                      eot_tokens=["<|endoftext|>"])
    assert trained_runs(tok, enc.encode(row_to_conversation(chat_row(PAIRS[0]), "t"))) == [
        "12 + 30 = 42.\n<|endoftext|>"]


def test_no_chat_template_error_names_the_fix(tok_factory):
    tok = PreTrainedTokenizerFast(tokenizer_object=tok_factory("chatml").backend_tokenizer, eos_token="<|im_end|>")
    with pytest.raises(ValueError, match="dataset.chat_template"):
        ChatEncoder(tok)


@pytest.mark.parametrize("answer_only", [True, False])
def test_prompt_template_path(tok_factory, answer_only):
    tok = tok_factory("llama3")
    enc = PromptEncoder(tok, "Question: {input} Answer: {output}", answer_only_loss=answer_only)
    sample = enc.encode(row_to_conversation({"input": "why?", "output": "yes."}, "t:5"))
    ids = sample.input_ids.tolist()
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == tok.eos_token_id and sample.loss_mask[-1] == 1  # EOS appended and trained
    if answer_only:
        assert trained_runs(tok, sample) == ["yes.<|eot_id|>"]
        prompt_ids = tok("Question: why? Answer: ").input_ids
        assert ids[: len(prompt_ids)] == prompt_ids  # the prompt is tokenised as at inference
    else:
        assert np.all(sample.loss_mask == 1)
    with pytest.raises(BadSampleError, match="double_bos|two BOS"):
        PromptEncoder(tok, "<|begin_of_text|>{input} {output}").encode(
            row_to_conversation({"input": "a", "output": "b"}, "t"))
