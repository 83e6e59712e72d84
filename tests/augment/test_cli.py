import json

import pytest
from click.testing import CliRunner

from augment.cli import main


@pytest.fixture()
def base(tiny_mlm, tiny_glove, tmp_path, monkeypatch):
    monkeypatch.setenv("BERT_COMPRESS_CACHE", str(tmp_path / "cache"))
    return ["--teacher", str(tiny_mlm), "--glove", str(tiny_glove), "--k", "4"]


def run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_candidates_json(base):
    result = run(["candidates", *base, "--text", "The heartfelt film", "--text", "the and"])
    assert result.exit_code == 0, result.output
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first["text"] == "The heartfelt film" and first["words"] == ["the", "heartfelt", "film"]
    assert set(first["candidates"]) == {"1", "2"}
    assert all(isinstance(c, list) and c for c in first["candidates"].values())
    assert second["candidates"] == {}


def test_text_variants_from_file(base, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("a good film with great music\nboring plot\n", encoding="utf-8")
    result = run(["text", *base, "--input", str(path), "--n-aug", "sst2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in records] == ["line-1", "line-2"]
    assert records[0]["text"] == "a good film with great music"
    assert 0 < len(records[0]["variants"]) <= 20  # sst2 -> the authors' N_a = 20
    again = run(["text", *base, "--input", str(path), "--n-aug", "20", "--seed", "3"])
    assert again.stdout == result.stdout


def test_non_utf8_input_names_the_line(base, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\nbad \xff byte\n")
    result = run(["candidates", *base, "--input", str(path)])
    assert result.exit_code != 0 and "line 2 is not valid UTF-8" in result.output


@pytest.mark.parametrize("flag, value, message", [
    ("--p-t", "1.5", "'--p-t'"), ("--n-aug", "mnli2", "no authors' N_a"), ("--k", "0", "'--k'"),
])
def test_bad_flags_name_the_flag(base, flag, value, message):
    result = run(["text", *base, "--text", "a film", flag, value])
    assert result.exit_code == 2 and message in result.output


def test_no_input_is_a_usage_error(base):
    result = run(["text", *base])
    assert result.exit_code == 2 and "--text TEXT or --input FILE" in result.output


def test_teacher_that_is_not_an_mlm(tmp_path, tiny_glove):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=8)).save_pretrained(tmp_path / "enc")
    result = run(["text", "--teacher", str(tmp_path / "enc"), "--glove", str(tiny_glove), "--text", "x"])
    assert result.exit_code == 1 and "not a masked language model" in result.output


def test_keep_special_tokens_flag(base, tiny_mlm):
    k = str(len((tiny_mlm / "vocab.txt").read_text().split()))  # every special token is in the top-K
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    found = {}
    for extra in ([], ["--keep-special-tokens"]):
        result = run(["candidates", *base, "--k", k, "--text", "a good film", *extra])
        assert result.exit_code == 0, result.output
        found[bool(extra)] = json.loads(result.stdout)["candidates"]
    assert set(found[False]) == set(found[True]) == {"1", "2"}
    for pos, kept in found[True].items():
        assert special <= set(kept)
        assert found[False][pos] == [w for w in kept if w not in special]
