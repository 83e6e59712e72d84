"""Special-token strings in data text are read as text by the collators (training and `distill eval`):
a literal [SEP] or </s> adds no segment, and QA offsets still point into the original text."""
import pytest

from distill.data.stream import Collator
from distill.data.encoding import encode_text
from distill.data.qa import QACollator
from tests.distill.conftest import qa_tokenizer, tiny_tokenizer


def roberta_tokenizer():
    """A tiny byte-level BPE tokenizer of the RoBERTa family (<s> ... </s></s> ... </s>)."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaTokenizer

    tokens = ["<s>", "<pad>", "</s>", "<unk>"] + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġf", "<mask>"]
    return RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[("Ġ", "f")])


def segments(tokenizer, input_ids, token_type_ids) -> tuple[int, int, int]:
    """(separator tokens, start tokens, distinct segment ids) of one encoded row."""
    ids = [int(i) for i in input_ids]
    return ids.count(tokenizer.sep_token_id), ids.count(tokenizer.cls_token_id), len(set(map(int, token_type_ids)))


# The tiny BERT vocabulary has no "[" or "]": as text they are rightly [UNK]. Byte-level BPE has no
# unknown token at all.
@pytest.mark.parametrize("make, literals, unknown_chars", [(tiny_tokenizer, "[SEP] [CLS] [MASK] [UNK] [PAD]", True),
                                                           (roberta_tokenizer, "</s> <s> <mask> <unk> <pad>", False)])
@pytest.mark.parametrize("fields", [["sentence"], ["question", "sentence"]])
def test_a_literal_special_token_adds_no_segment(make, literals, unknown_chars, fields):
    tok = make()
    plain = {"question": "the film", "sentence": "a good film"}
    smuggled = {"question": f"the {literals} film", "sentence": f"a good {literals} film"}
    collator = Collator(tok, fields, max_length=64, with_labels=False)
    batch = collator([plain, smuggled])
    plain_row, row = ({k: batch[k][r][batch["attention_mask"][r].bool()] for k in ("input_ids", "token_type_ids")}
                      for r in (0, 1))
    expected = segments(tok, plain_row["input_ids"], plain_row["token_type_ids"])
    assert segments(tok, row["input_ids"], row["token_type_ids"]) == expected
    specials = set(tok.all_special_ids) - {tok.sep_token_id, tok.cls_token_id}
    specials -= {tok.unk_token_id} if unknown_chars else set()
    assert not specials & set(row["input_ids"].tolist())  # no [MASK], [PAD]... from the text either
    # The tokenizer alone reads them as control tokens: the case above is a real one.
    raw = tok(*[[smuggled[f]] for f in fields])["input_ids"][0]
    assert raw.count(tok.sep_token_id) > expected[0]


@pytest.mark.integration
def test_real_teacher_tokenizer_reads_sep_as_text(assets):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(assets / "models" / "minilm-l6-mlm"))
    enc = encode_text(tok, ["as stale [SEP]", "as stale"])["input_ids"]
    assert tok.convert_ids_to_tokens(enc[0]) == ["[CLS]", "as", "stale", "[", "sep", "]", "[SEP]"]
    assert enc[0].count(tok.sep_token_id) == enc[1].count(tok.sep_token_id) == 1


CONTEXT = "Alice lives in [SEP] Paris. Bob lives in the city of </s> Rome."


def test_qa_windows_read_special_tokens_as_text_and_offsets_stay_right():
    rome, paris = CONTEXT.index("Rome"), CONTEXT.index("Paris")
    rows = [{"id": qid, "question": question, "context": CONTEXT, "is_impossible": False,
             "answers": {"text": [text], "answer_start": [start]}}
            for qid, question, text, start in [("r", "Where does [SEP] Bob live?", "Rome", rome),
                                               ("p", "Where does Alice live?", "Paris", paris)]]
    tok = qa_tokenizer()
    enc = QACollator(tok, max_seq_length=64, doc_stride=2, max_query_length=16).encode(rows)
    assert enc["example_index"] == [0, 1]
    for w, row in enumerate(rows):
        real = sum(enc["attention_mask"][w])
        ids, types = enc["input_ids"][w][:real], enc["token_type_ids"][w][:real]
        assert ids.count(tok.sep_token_id) == 2 and ids.count(tok.cls_token_id) == 1
        assert types == sorted(types)  # one question segment, then one context segment
        start, end = enc["start_positions"][w], enc["end_positions"][w]
        assert CONTEXT[enc["offsets"][w][start][0]:enc["offsets"][w][end][1]] == row["answers"]["text"][0]
    # "[SEP]" in the context is three tokens of the context, at its characters
    first = enc["offsets"][1].index((CONTEXT.index("[SEP]"), CONTEXT.index("[SEP]") + 1))
    assert enc["offsets"][1][first + 2] == (CONTEXT.index("[SEP]") + 4, CONTEXT.index("[SEP]") + 5)
    # the question budget counts "[SEP]" as the three tokens it now is: cut after "where does ["
    short = QACollator(tok, max_seq_length=64, doc_stride=2, max_query_length=3).encode(rows[:1])
    assert tok.convert_ids_to_tokens(short["input_ids"][0][:5]) == ["[CLS]", "where", "does", "[UNK]", "[SEP]"]


def test_a_tokenizer_that_cannot_read_them_as_text_is_refused(tmp_path):
    from transformers import BertTokenizerLegacy  # Python WordPiece: keeps [SEP] whole whatever it is told

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    slow = BertTokenizerLegacy(str(vocab))
    with pytest.raises(ValueError, match="BertTokenizerLegacy is not a fast tokenizer"):
        Collator(slow, ["sentence"], with_labels=False)([{"sentence": "a [SEP] a"}])
