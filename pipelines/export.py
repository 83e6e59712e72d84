"""Export a corpus to the TSV layout of the TinyBERT authors' ``train_aug.tsv`` (Beam-free).

The authors' ``data_augmentation.py`` writes, per input row, the row itself then one row per
variant, keeping the GLUE ``train.tsv`` columns (and its header, except for CoLA), so their
``task_distill.py`` reads it with the same column indices as ``train.tsv``. This export writes the
GLUE layout of the task (:attr:`TaskSpec.tsv_layout`): the text fields and the label (its GLUE name)
at their GLUE positions, ``index``/``id`` columns with the record number, other columns empty
(the corpus does not keep them). Rows come in source order, each record's variants after it.
Unlike the authors' script, a pair task's variant rows keep the other sentence unchanged.
"""
from __future__ import annotations

import argparse

from pipelines import fs
from pipelines.manifest import CorpusError, require_manifest
from pipelines.shards import read_shard, sort_rows
from pipelines.tasks import get_task

INDEX_COLUMNS = ("index", "id")


def format_label(label, label_names) -> str:
    if label_names is None:
        return f"{label:.6g}"
    return label_names[int(label)]


def export_tsv(corpus: str, dest: str) -> int:
    """Write ``corpus`` (a corpus folder) as a GLUE-layout TSV at ``dest``; returns the data rows.

    Raises :class:`CorpusError` for an incomplete corpus or a task without a GLUE layout (SQuAD).
    """
    manifest = require_manifest(corpus)
    spec = get_task(manifest["task"])
    if spec.tsv_layout is None:
        raise CorpusError(f"task {spec.name} has no GLUE TSV layout to export to")
    rows = []
    for shard in manifest["shards"]:
        with fs.open_read(fs.join(corpus, shard["file"])) as f:
            rows += read_shard(f).to_pylist()
    rows = sort_rows(rows)
    columns = spec.tsv_columns or {}
    positions = spec.column_positions()
    sources = {sid: n for n, sid in enumerate(dict.fromkeys(r["source_id"] for r in rows))}
    lines = [] if spec.tsv_columns is None else ["\t".join(spec.tsv_layout)]
    for r in rows:
        cells = [""] * len(spec.tsv_layout)
        for i, name in enumerate(spec.tsv_layout):
            if name in INDEX_COLUMNS and name not in columns.values():
                cells[i] = str(sources[r["source_id"]])
        for name in spec.text_fields:
            cells[positions[name]] = _clean(r[name])
        cells[positions["label"]] = format_label(r["label"], spec.label_names)
        lines.append("\t".join(cells))
    with fs.create(dest) as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    return len(rows)


def _clean(text: str) -> str:
    """Tabs and line breaks would break the TSV (GLUE files are read without quoting)."""
    return " ".join(text.replace("\t", " ").splitlines())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="augment.py export-tsv", description=__doc__.split("\n")[0])
    parser.add_argument("corpus", help="the corpus folder (holds manifest.json)")
    parser.add_argument("dest", help="the TSV file to write (e.g. train_aug.tsv)")
    args = parser.parse_args(argv)
    try:
        n = export_tsv(args.corpus, args.dest)
    except CorpusError as e:
        parser.error(str(e))
    print(f"wrote {n} rows to {args.dest}")
