import pytest

from sft_bridge_port.data.conversation import BadSampleError, split_reasoning
from sft_bridge_port.data.formats import detect_format, resolve_format_name, row_to_conversation


def roles_contents(conv):
    return [(m.role, m.content) for m in conv.messages]


def test_prompt_completion_and_aliases():
    for row in ({"input": "2+2?", "output": "4"}, {"question": "2+2?", "answer": "4"},
                {"prompt": "2+2?", "completion": "4"}, {"query": "2+2?", "response": "4"}):
        conv = row_to_conversation(row, "f:1")
        assert roles_contents(conv) == [("user", "2+2?"), ("assistant", "4")]
    conv = row_to_conversation({"input": "q", "target": "a"}, "f:1", fmt="prompt_completion", label_key="target")
    assert roles_contents(conv)[-1] == ("assistant", "a")


def test_alpaca_with_input_and_system():
    conv = row_to_conversation({"instruction": "Reverse", "input": "abc", "output": "cba", "system": "S"}, "f:2")
    assert roles_contents(conv) == [("system", "S"), ("user", "Reverse\n\nabc"), ("assistant", "cba")]
    assert roles_contents(row_to_conversation({"instruction": "Hi", "input": "", "output": "Yo"}, "f")) == [
        ("user", "Hi"), ("assistant", "Yo")]


def test_sharegpt_role_normalisation():
    row = {"system": "sys", "conversations": [
        {"from": "Human", "value": "q1"}, {"from": "gpt", "value": "a1"},
        {"from": "User", "value": "q2"}, {"from": "Assistant", "value": "call"},
        {"from": "observation", "value": "tool out"}, {"from": "bot", "value": "a2"}]}
    conv = row_to_conversation(row, "f:3")
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant", "tool",
                                              "assistant"]
    with pytest.raises(BadSampleError, match=r"f:4: field 'conversations\[0\].from'.*unknown speaker"):
        row_to_conversation({"conversations": [{"from": "narrator", "value": "x"}]}, "f:4")


def test_openai_messages_tools_reasoning_and_parts():
    row = {"tools": [{"type": "function", "function": {"name": "get_weather"}}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "Paris?"}]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        {"role": "assistant", "content": "<think>it is sunny</think>\n\nSunny.", }]}
    conv = row_to_conversation(row, "f:5")
    assert conv.messages[0].content == "weather Paris?"
    assert conv.messages[1].tool_calls[0]["function"]["name"] == "get_weather"
    assert conv.messages[2].tool_call_id == "1"
    assert (conv.messages[3].reasoning, conv.messages[3].content) == ("it is sunny", "Sunny.")
    assert conv.tools[0]["function"]["name"] == "get_weather"
    conv = row_to_conversation({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a", "reasoning_content": "r"}]}, "f")
    assert conv.messages[1].reasoning == "r"
    assert split_reasoning("<think>a+b</think>\n\n7") == ("a+b", "7")


def test_detection_and_unknown_format():
    assert detect_format({"messages"}) == "openai_messages"
    assert detect_format({"conversations", "id"}) == "sharegpt"
    assert detect_format({"instruction", "input", "output"}) == "alpaca"
    assert detect_format({"input", "output"}) == "prompt_completion"
    with pytest.raises(BadSampleError, match="f:9: field 'foo,text'.*cannot detect the format") as err:
        row_to_conversation({"text": "x", "foo": 1}, "f:9")
    assert err.value.reason == "unknown_format"
    with pytest.raises(ValueError, match="unknown dataset format 'yaml'"):
        resolve_format_name("yaml")


@pytest.mark.parametrize("messages, field, reason", [
    ([{"role": "user", "content": "q"}], "messages", "no_assistant_turn"),
    ([{"role": "assistant", "content": "a"}], r"messages\[0\].role", "roles_out_of_order"),
    ([{"role": "user", "content": "q"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
     r"messages\[1\].role", "roles_out_of_order"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}],
     r"messages\[2\].role", "roles_out_of_order"),
    ([{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}], r"messages\[0\].content",
     "empty_content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}], r"messages\[1\].content",
     "empty_content"),
    ([{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}], r"messages\[1\].role", "unknown_role"),
])
def test_bad_conversations_name_row_and_field(messages, field, reason):
    with pytest.raises(BadSampleError, match=rf"data.jsonl:7: field '{field}'") as err:
        row_to_conversation({"messages": messages}, "data.jsonl:7")
    assert err.value.reason == reason
