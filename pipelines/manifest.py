"""The corpus manifest: what was built from what, its fingerprint, and reusing a corpus (Beam-free).

``OUTPUT/manifest.json`` is written last, atomically, so its presence means the corpus is complete.
The *fingerprint* hashes everything that decides the rows (input contents, task and fields, teacher
weights and tokenizer files, GloVe file, augmentation parameters and seed, shard count, format
version); a run whose fingerprint matches an existing manifest reuses that corpus.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from augment import identity
from augment.identity import TOKENIZER_FILES, canonical_json, fingerprint, package_version  # noqa: F401 (re-exported)
from pipelines import fs
from pipelines.shards import FORMAT, FORMAT_VERSION, MANIFEST, CorpusError  # noqa: F401 (re-exported)

DEAD_LETTER = "dead-letter.jsonl"


def teacher_identity(teacher: str) -> dict:
    """{name, weights_sha256, weights_files, tokenizer_sha256} of a teacher folder (local or URL) or
    hub name: :func:`augment.identity.teacher_identity` through Beam's file systems."""
    return identity.teacher_identity(teacher, files=fs)


def glove_identity(glove: str) -> dict:
    """{path, sha256} of a GloVe file (local or URL)."""
    return identity.glove_identity(glove, files=fs)


def build_manifest(static: dict, shards: list[dict], counts: dict, engine: dict | None = None) -> dict:
    """The full manifest: ``static`` (identity, inputs, params...) + shard list + counts + time.

    Args:
        shards: one summary {file, rows, originals, variants} per shard written.
        counts: {read, rejected}: items read, lines in the dead letters.
        engine: what augmenting took (texts, MLM rows, GloVe cache hits/misses), stored as is.
    Raises :class:`CorpusError` when a shard is summarised twice or the counts do not reconcile
    (read = accepted + rejected, originals = accepted, rows = originals + variants = sum of shard rows).
    """
    shards = sorted(shards, key=lambda s: s["file"])
    repeated = sorted({a["file"] for a, b in zip(shards, shards[1:]) if a["file"] == b["file"]})
    if repeated:
        raise CorpusError(f"shard(s) {repeated} summarised more than once")
    rows = sum(s["rows"] for s in shards)
    counts = dict(counts, rows=rows, originals=sum(s["originals"] for s in shards),
                  variants=sum(s["variants"] for s in shards))
    counts["accepted"] = counts["read"] - counts["rejected"]
    problems = []
    if counts["originals"] != counts["accepted"]:
        problems.append(f"originals {counts['originals']} != accepted {counts['accepted']}")
    if counts["originals"] + counts["variants"] != rows:
        problems.append(f"originals + variants != rows {rows}")
    if problems:
        raise CorpusError("counts do not reconcile: " + "; ".join(problems) + f" ({counts})")
    extra = {} if engine is None else {"engine": dict(engine)}
    return dict(static, shards=[{"file": s["file"], "rows": s["rows"]} for s in shards], counts=counts,
                **extra, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def write_manifest(output: str, manifest: dict) -> str:
    """Write ``OUTPUT/manifest.json`` atomically; returns its path."""
    path = fs.join(output, MANIFEST)
    fs.write_atomic(path, (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def read_manifest(output: str) -> dict | None:
    """The manifest of the corpus at ``output``, or ``None`` when there is none (not built, or a
    run that died). Raises :class:`CorpusError` for a manifest of another format."""
    path = fs.join(output, MANIFEST)
    if not fs.exists(path):
        return None
    manifest = json.loads(fs.read_bytes(path))
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CorpusError(f"{path}: format {manifest.get('format')} v{manifest.get('format_version')}, "
                          f"expected {FORMAT} v{FORMAT_VERSION}")
    return manifest


def require_manifest(output: str) -> dict:
    """The manifest of the corpus at ``output``; :class:`CorpusError` when there is none."""
    manifest = read_manifest(output)
    if manifest is None:
        raise CorpusError(f"{output} has no {MANIFEST}: not a corpus, or its build did not finish")
    return manifest


def load_corpus(output: str, expect_fingerprint: str | None = None):
    """An existing corpus as one ``datasets.Dataset`` (shards in manifest order), for experiments.

    Args:
        output: the corpus folder (local; for ``gs://`` copy it first or use ``load_dataset("arrow")``).
        expect_fingerprint: when given, the corpus must carry this fingerprint.
    Raises :class:`CorpusError` when the manifest is missing, the fingerprint differs, or a shard's
    row count is not the manifest's.
    """
    import datasets

    manifest = require_manifest(output)
    if expect_fingerprint is not None and manifest["fingerprint"] != expect_fingerprint:
        raise CorpusError(f"{output} is corpus {manifest['fingerprint']}, expected {expect_fingerprint}")
    parts = []
    for shard in manifest["shards"]:
        part = datasets.Dataset.from_file(str(Path(output) / shard["file"]))
        if len(part) != shard["rows"]:
            raise CorpusError(f"{shard['file']} has {len(part)} rows, the manifest says {shard['rows']}")
        parts.append(part)
    return datasets.concatenate_datasets(parts)
