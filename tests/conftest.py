"""Project-wide fixtures: the real assets (integration tests) and tiny random BERTs (unit tests)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from augment.assets import ENV_VAR, assets_dir

TINY_WORDS = (
    "the a an and is was of to in it this that film movie story acting plot good bad great fine funny "
    "boring dull sweet smart not very too so but with for on as by at be are cast director "
    "script scene music love hate makes made make one two its his her their best worst heart felt "
    "wonderful terrible performance actors comedy drama"
).split()


def pytest_report_header(config) -> str:
    """What decides float rounding here, at the top of every run's output: exactness tests that fail
    on a new machine say so too (tests/numerics.py)."""
    from tests.numerics import cpu

    return f"numerics: {cpu()}"


def require_assets(*relative: str) -> Path:
    """The assets directory, holding every ``relative`` path: missing ones fail under CI (``CI``
    set) and skip elsewhere, so integration tests never pass vacuously in CI."""
    root = assets_dir()
    missing = [str(root / r) for r in relative if not (root / r).exists()]
    if missing:
        message = f"assets missing ({', '.join(missing)}); set {ENV_VAR}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def assets() -> Path:
    """The real assets directory with the MiniLM teacher and GloVe 50-d."""
    return require_assets("models/minilm-l6-mlm/config.json", "glove/glove.6B.50d.top100k.txt")


def write_tiny_vocab(path: Path) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(".,!?'-") + list(letters)
    tokens += ["##" + c for c in letters] + sorted(set(TINY_WORDS) - set(letters)) + ["##ing", "##ed"]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def build_tiny_mlm(directory: Path, seed: int = 0, max_positions: int = 128, **overrides) -> Path:
    """Save a tiny random ``BertForMaskedLM`` with its vocab to ``directory``; returns it."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    directory.mkdir(parents=True, exist_ok=True)
    vocab = write_tiny_vocab(directory / "vocab.txt")
    (directory / "tokenizer_config.json").write_text('{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}')
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=max_positions, **overrides)
    model = BertForMaskedLM(config).eval()
    model.save_pretrained(directory)
    return directory


def write_tiny_glove(path: Path, words, dim: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for w in words:
            f.write(w + " " + " ".join(f"{x:.5f}" for x in rng.normal(size=dim)) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    return build_tiny_mlm(tmp_path_factory.mktemp("tiny-mlm"))


@pytest.fixture(scope="session")
def tiny_glove(tmp_path_factory) -> Path:
    words = TINY_WORDS + ["heartfelt", "wonderfully", "superb", "gripping", "mesmerizing", "screenplay",
                          "cinematography", "heartwarming", "lackluster", "unwatchable"]
    return write_tiny_glove(tmp_path_factory.mktemp("glove") / "glove.tiny.8d.txt", words)
