"""The input flags the corpus benchmarks share, defaulting to the assets (BERT_COMPRESS_ASSETS)."""
from __future__ import annotations

import argparse

from augment.assets import asset


def add_corpus_inputs(p: argparse.ArgumentParser) -> None:
    """``--input`` (an SST-2 style TSV), ``--teacher`` (a masked LM) and ``--glove`` (a GloVe file)."""
    p.add_argument("--input", default=None, help="SST-2 style TSV (default: the assets' SST-2 train)")
    p.add_argument("--teacher", default=None, help="masked LM (default: the assets' MiniLM)")
    p.add_argument("--glove", default=None, help="GloVe text file (default: the assets' 50-d top 100k)")


def resolve_corpus_inputs(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the flags left unset with the assets' files (raises naming the variable when missing)."""
    args.input = args.input or str(asset("glue", "SST-2", "train.tsv"))
    args.teacher = args.teacher or str(asset("models", "minilm-l6-mlm"))
    args.glove = args.glove or str(asset("glove", "glove.6B.50d.top100k.txt"))
    return args
