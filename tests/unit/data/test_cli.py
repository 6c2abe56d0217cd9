import argparse
import io
import json

from sft_bridge_port.data import cli

from .conftest import chat_row, write_jsonl


def parse(argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_preview_json_and_text(tmp_path, tok_factory):
    tok = tok_factory("llama3")
    tok.save_pretrained(str(tmp_path / "tok"))
    data = write_jsonl(tmp_path / "d.jsonl", [chat_row(("Hello!", "Hello! How can I help you today?")),
                                              {"messages": [{"role": "user", "content": "q"}]}])
    out, err = io.StringIO(), io.StringIO()
    args = parse(["data", "preview", "--data", str(data), "--tokenizer", str(tmp_path / "tok"), "--json"])
    assert cli.preview(args, out, err) == 0
    (sample,) = json.loads(out.getvalue())
    assert len(sample["input_ids"]) == len(sample["loss_mask"])
    trained = [t for t, m in zip(sample["input_ids"], sample["loss_mask"]) if m]
    assert tok.decode(trained) == "Hello! How can I help you today?<|eot_id|>"
    assert "2 rows -> 1 samples" in err.getvalue() and "skipped 1 x no_assistant_turn" in err.getvalue()
    out = io.StringIO()
    cli.preview(parse(["data", "preview", "--data", str(data), "--tokenizer", str(tmp_path / "tok")]), out)
    assert "[[Hello! How can I help you today?<|eot_id|>]]" in out.getvalue()


def test_pack_writes_then_reuses_cache(tmp_path, tok_factory):
    tok_factory("chatml").save_pretrained(str(tmp_path / "tok"))
    write_jsonl(tmp_path / "training.jsonl", [chat_row(("Hello!", f"answer {i}")) for i in range(10)])
    argv = ["data", "pack", "--data", str(tmp_path), "--tokenizer", str(tmp_path / "tok"), "--seq-length", "64"]
    out = io.StringIO()
    cli.pack(parse(argv), out)
    assert "cache written" in out.getvalue() and "efficiency" in out.getvalue()
    out = io.StringIO()
    cli.pack(parse(argv), out)
    assert "cache reused" in out.getvalue()
