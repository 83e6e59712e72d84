"""Where the real models and data for tests, benchmarks and experiments live.

``BERT_COMPRESS_ASSETS`` names the directory; without it, ``../shared/assets`` beside the project
checkout is used. Layout: ``models/minilm-l6-mlm``, ``glove/glove.6B.50d.top100k.txt``,
``glue/<TASK>/{train,dev}.tsv``, ``squad/*.json``, ``corpus/wikitext-2.*.tokens.txt``.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "BERT_COMPRESS_ASSETS"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def assets_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else (PROJECT_ROOT.parent / "shared" / "assets").resolve()


def asset(*parts: str) -> Path:
    """Path of an asset; raises ``FileNotFoundError`` naming the variable to set when missing."""
    path = assets_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"asset {path} not found; set {ENV_VAR} to the assets directory")
    return path
