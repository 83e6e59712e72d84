"""Fixtures of the corpus-builder tests: fake model files, small task files, the real assets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_assets
from tests.pipelines.helpers import write_fake_models

SST2_TSV = (
    "sentence\tlabel\n"
    "a gripping , funny film \t1\n"
    "dull and lifeless\t0\n"
    "the actors shine in every scene\t1\n"
    "an utterly forgettable mess\t0\n"
    "warm , witty and wise\t1\n"
)

QNLI_TSV = (
    "index\tquestion\tsentence\tlabel\n"
    "0\tWhat city hosts the festival?\tThe festival is held every summer in Edinburgh.\tentailment\n"
    "1\tWho wrote the novel?\tThe film was shot in black and white.\tnot_entailment\n"
    "2\tWhen did the war end?\tThe war ended in 1945 after six long years.\tentailment\n"
)

SQUAD = {"version": "v2.0", "data": [{"title": "Edinburgh", "paragraphs": [{
    "context": "Edinburgh is the capital city of Scotland. The famous festival happens every August.",
    "qas": [
        {"id": "q1", "question": "What is the capital of Scotland?", "is_impossible": False,
         "answers": [{"text": "Edinburgh", "answer_start": 0}, {"text": "Edinburgh", "answer_start": 0}]},
        {"id": "q2", "question": "When does the famous festival happen?", "is_impossible": False,
         "answers": [{"text": "every August", "answer_start": 71}]},
        {"id": "q3", "question": "Who founded the festival?", "is_impossible": True, "answers": [],
         "plausible_answers": [{"text": "Scotland", "answer_start": 33}]},
        {"id": "q4", "question": "Where is the castle?", "is_impossible": False,
         "answers": [{"text": "Glasgow", "answer_start": 5}]},
    ]}]}]}


@pytest.fixture
def fake_models(tmp_path) -> tuple[str, str]:
    """(teacher folder, GloVe file) that the run's hashing accepts; a fake loader ignores them."""
    return write_fake_models(tmp_path)


@pytest.fixture
def task_files(tmp_path) -> dict[str, str]:
    """Small SST-2 / QNLI TSV and SQuAD JSON files."""
    paths = {"sst2": tmp_path / "train.tsv", "qnli": tmp_path / "dev.tsv", "squad": tmp_path / "squad.json"}
    paths["sst2"].write_text(SST2_TSV)
    paths["qnli"].write_text(QNLI_TSV)
    paths["squad"].write_text(json.dumps(SQUAD))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real assets, with everything the pipeline's integration tests read."""
    return require_assets("models/minilm-l6-mlm/config.json", "glove/glove.6B.50d.top100k.txt",
                          "glue/SST-2/train.tsv", "glue/QNLI/dev.tsv", "squad/squad2-train-split.json")
