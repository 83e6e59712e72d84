"""Fixtures for distill tests: tiny random BERTs with a tiny vocabulary, and tiny corpora written
in the corpus builder's shard format (Arrow IPC stream + manifest.json)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch

from distill.data.shards import ShardWriter, task_schema, text_schema

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub; unknown names fail fast

WORDS = ("the a film movie story plot acting good great fine funny sweet bad dull boring awful weak "
         "not very so and but is was it this of to in with music cast scene").split()
POSITIVE, NEGATIVE = {"good", "great", "fine", "funny", "sweet"}, {"bad", "dull", "boring", "awful", "weak"}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + WORDS


def tiny_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True)


def tiny_config(layers: int = 4, hidden: int = 32, heads: int = 4, **kw):
    from transformers import BertConfig

    kw = {"vocab_size": len(VOCAB), "max_position_embeddings": 64, **kw}
    return BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=2 * hidden, **kw)


def save_model(model, directory: Path) -> Path:
    model.save_pretrained(directory)
    tiny_tokenizer().save_pretrained(directory)
    return directory


def sentence(rng: random.Random) -> tuple[str, int]:
    """A random sentence and its label: 1 when a positive word comes before any negative word."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
    for w in words:
        if w in POSITIVE:
            return " ".join(words), 1
        if w in NEGATIVE:
            return " ".join(words), 0
    words.append(rng.choice(sorted(POSITIVE)))
    return " ".join(words), 1


def write_task_corpus(root: Path, n_source: int = 40, n_aug: int = 2, rows_per_shard: int = 25, seed: int = 0,
                      task: str = "sst2", fields=("sentence",), label_names=("0", "1"), schema=None) -> Path:
    """A corpus like the builder's: each source row (aug_index 0) followed by n_aug variants."""
    rng = random.Random(seed)
    regression = label_names is None
    manifest = {"task": task, "text_fields": list(fields), "label_names": None if regression else list(label_names),
                "counts": {"sources": n_source}}
    with ShardWriter(str(root), schema or task_schema(fields, regression), rows_per_shard, manifest, batch_rows=7) as w:
        for i in range(n_source):
            for a in range(n_aug + 1):
                row = {"id": f"s{i}-{a}", "source_id": f"s{i}", "aug_index": a}
                label = None
                for f in fields:
                    row[f], label = sentence(rng)
                row["label"] = float(label) if regression else label
                w.write(row)
    return root


def write_text_corpus(root: Path, n: int = 60, rows_per_shard: int = 16, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with ShardWriter(str(root), text_schema(), rows_per_shard, {"task": "text", "text_fields": ["text"],
                                                              "label_names": None}) as w:
        for i in range(n):
            w.write({"id": f"t{i}", "text": sentence(rng)[0]})
    return root


def write_dev_tsv(path: Path, n: int = 24, seed: int = 99) -> Path:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in (sentence(rng) for _ in range(n))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny pretrained-encoder stand-in (BertForMaskedLM, 4 layers, hidden 32, 4 heads)."""
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    return save_model(BertForMaskedLM(tiny_config()), tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny 'fine-tuned' SST-2 teacher (random weights, classification head saved)."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    return save_model(BertForSequenceClassification(tiny_config(num_labels=2)), tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="session")
def student_config_file(tmp_path_factory) -> Path:
    """A tiny student config (2 layers, hidden 16, 4 heads like the teacher)."""
    path = tmp_path_factory.mktemp("student") / "config.json"
    path.write_text(tiny_config(layers=2, hidden=16, heads=4).to_json_string(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sst2_corpus(tmp_path_factory) -> Path:
    return write_task_corpus(tmp_path_factory.mktemp("corpus") / "sst2")


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    return write_text_corpus(tmp_path_factory.mktemp("corpus") / "text")


@pytest.fixture(scope="session")
def dev_tsv(tmp_path_factory) -> Path:
    return write_dev_tsv(tmp_path_factory.mktemp("glue") / "dev.tsv")


from tests.conftest import require_assets  # noqa: E402  (the one assets guard)


@pytest.fixture(scope="session")
def real_assets() -> Path:
    """The real assets; missing ones fail under CI and skip elsewhere."""
    return require_assets("models/minilm-l6-mlm/config.json", "glue/SST-2/dev.tsv",
                          "corpus/wikitext-2.valid.tokens.txt")


@pytest.fixture(scope="session")
def squad_assets() -> Path:
    """MiniLM and the SQuAD 2.0 train/eval splits; missing ones fail under CI and skip elsewhere."""
    return require_assets("models/minilm-l6-mlm/config.json", "squad/squad2-train-split.json",
                          "squad/squad2-eval-split.json")


# --------------------------------------------------------------------------------------------------
# SQuAD: a tiny vocabulary of names and places, questions about who lives where.

QA_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank")
QA_PLACES = ("paris", "rome", "oslo", "lima", "cairo", "delhi")
QA_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ",", "?"] + list(QA_NAMES) + list(QA_PLACES) + \
    "where does do live lives in the city of and who".split()


def qa_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(QA_VOCAB)}, do_lower_case=True)


def qa_paragraph(rng: random.Random, n_people: int = 3) -> tuple[str, dict[str, tuple[str, int]]]:
    """A context 'Alice lives in Paris. Bob lives in the city of Rome. ...' and name -> (place, char start)."""
    names = rng.sample(QA_NAMES, n_people)
    parts, where = [], {}
    for name in names:
        place = rng.choice(QA_PLACES)
        prefix = f"{name.title()} lives in " + rng.choice(["", "the city of "])
        start = sum(len(p) + 1 for p in parts) + len(prefix)
        parts.append(f"{prefix}{place.title()}.")
        where[name] = (place.title(), start)
    return " ".join(parts), where


def write_squad_json(path: Path, n_paragraphs: int = 6, seed: int = 0, n_people: int = 3) -> Path:
    """A SQuAD 2.0 file: per paragraph, one answerable question per person and one unanswerable."""
    rng = random.Random(seed)
    data = []
    for p in range(n_paragraphs):
        context, where = qa_paragraph(rng, n_people)
        qas = [{"id": f"p{p}-{name}", "question": f"Where does {name.title()} live?", "is_impossible": False,
                "answers": [{"text": place, "answer_start": start}]} for name, (place, start) in where.items()]
        absent = sorted(set(QA_NAMES) - set(where))[0]
        qas.append({"id": f"p{p}-{absent}", "question": f"Where does {absent.title()} live?", "is_impossible": True,
                    "answers": []})
        data.append({"title": f"t{p}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(__import__("json").dumps({"version": "v2.0", "data": data}), encoding="utf-8")
    return path


def _qa_model_dir(tmp_path_factory, name: str, model_class: str, seed: int) -> Path:
    """A tiny random BERT (2 layers, hidden 32, the QA vocabulary) saved with the QA tokenizer."""
    import transformers

    torch.manual_seed(seed)
    directory = tmp_path_factory.mktemp(name)
    getattr(transformers, model_class)(tiny_config(layers=2, vocab_size=len(QA_VOCAB))).save_pretrained(directory)
    qa_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def qa_encoder_dir(tmp_path_factory) -> Path:
    """A pretrained-encoder stand-in (masked LM, no QA head)."""
    return _qa_model_dir(tmp_path_factory, "qa-encoder", "BertForMaskedLM", seed=0)


@pytest.fixture(scope="session")
def qa_teacher_dir(tmp_path_factory) -> Path:
    """A 'fine-tuned' SQuAD teacher (random weights, QA head saved)."""
    return _qa_model_dir(tmp_path_factory, "qa-teacher", "BertForQuestionAnswering", seed=2)


@pytest.fixture(scope="session")
def qa_student_config_file(tmp_path_factory) -> Path:
    """A tiny QA student config (1 layer, hidden 16, 4 heads like the teacher)."""
    path = tmp_path_factory.mktemp("qa-student") / "config.json"
    path.write_text(tiny_config(layers=1, hidden=16, heads=4, vocab_size=len(QA_VOCAB)).to_json_string(),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def squad_train_json(tmp_path_factory) -> Path:
    return write_squad_json(tmp_path_factory.mktemp("squad") / "train.json", n_paragraphs=8, seed=0)


@pytest.fixture(scope="session")
def squad_dev_json(tmp_path_factory) -> Path:
    return write_squad_json(tmp_path_factory.mktemp("squad") / "dev.json", n_paragraphs=3, seed=1)


def stand_in_corpus(root, rows: list[dict]):
    """An SST-2 corpus at ``root`` of ``rows`` (dicts with sentence, label), each original plus a
    copy as variant 1: for experiment smoke tests, which check the wiring, not augmentation."""
    manifest = {"task": "sst2", "text_fields": ["sentence"], "label_names": ["0", "1"]}
    with ShardWriter(str(root), task_schema(["sentence"]), 50, manifest) as w:
        for i, r in enumerate(rows):
            for a in range(2):
                w.write({"id": f"s{i}-{a}", "source_id": f"s{i}", "aug_index": a, "sentence": r["sentence"],
                         "label": r["label"]})
    return root
