"""What identifies an augmentation engine's output: teacher and GloVe file hashes, package version.

One implementation for every place that records it: the corpus builder's manifest
(:mod:`pipelines.manifest`, through Beam's file systems so folders may be ``gs://`` URLs) and the
augmentation service's ``GET /v1/info`` (:mod:`augment.serve`, local files).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

# What decides the words (vocabulary, casing) and which tokens are special (never candidates).
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.json")


class Files(Protocol):
    """The file operations identity needs (``pipelines.fs`` provides them for URLs too)."""

    def join(self, base: str, *parts: str) -> str: ...

    def basename(self, path: str) -> str: ...

    def match(self, pattern: str) -> list[str]: ...

    def sha256(self, path: str) -> str: ...


class LocalFiles:
    """:class:`Files` on the local disk."""

    @staticmethod
    def join(base: str, *parts: str) -> str:
        return os.path.join(base, *parts)

    @staticmethod
    def basename(path: str) -> str:
        return os.path.basename(path)

    @staticmethod
    def match(pattern: str) -> list[str]:
        # Only the last part is a pattern: a folder named like a glob ("run[1]") is taken as it is.
        folder, name = os.path.split(pattern)
        return sorted(glob.glob(os.path.join(glob.escape(folder), name)))

    @staticmethod
    def sha256(path: str, chunk: int = 1 << 20) -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        return h.hexdigest()


LOCAL = LocalFiles()


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("bert-compress")
    except Exception:  # not installed: the source tree's version
        from augment import __version__

        return __version__


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(identity: dict) -> str:
    """SHA-256 (hex, first 16 digits) of the canonical JSON of ``identity``."""
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()[:16]


def teacher_identity(teacher: str, files: Files = LOCAL) -> dict:
    """{name, weights_sha256, weights_files, tokenizer_sha256} of a teacher: a model folder (local,
    or a URL with ``files=pipelines.fs``) or a hub name.

    The weights hash covers every ``*.safetensors`` / ``*.bin`` file in name order; the tokenizer
    hash the :data:`TOKENIZER_FILES` present (what decides the words, and which tokens are special
    and so never candidates). A hub name is resolved through the Hugging Face cache (downloading if
    needed, as loading the teacher would).
    Raises ``FileNotFoundError`` when no weights file is found.
    """
    weights = files.match(files.join(teacher, "*.safetensors")) + files.match(files.join(teacher, "*.bin"))
    tokenizer = [p for name in TOKENIZER_FILES for p in files.match(files.join(teacher, name))]
    if not weights and "://" not in teacher and not Path(teacher).exists():
        from transformers.utils import cached_file

        for name in ("model.safetensors", "pytorch_model.bin"):
            path = cached_file(teacher, name, _raise_exceptions_for_missing_entries=False)
            if path:
                weights = [path]
                break
        tokenizer = [p for p in (cached_file(teacher, name, _raise_exceptions_for_missing_entries=False)
                                 for name in TOKENIZER_FILES) if p]
        files = LOCAL  # the cache is a local folder
    if not weights:
        raise FileNotFoundError(f"no weights file (*.safetensors, *.bin) for teacher {teacher!r}")
    return {"name": teacher, "weights_sha256": _combined_sha256(weights, files),
            "weights_files": [files.basename(p) for p in weights],
            "tokenizer_sha256": _combined_sha256(tokenizer, files)}


def glove_identity(glove: str, files: Files = LOCAL) -> dict:
    """{path, sha256} of a GloVe text file."""
    return {"path": glove, "sha256": files.sha256(glove)}


def _combined_sha256(paths: list[str], files: Files) -> str | None:
    """The file's SHA-256, or for several files the SHA-256 of their hashes; ``None`` for none."""
    digests = [files.sha256(p) for p in paths]
    if len(digests) <= 1:
        return digests[0] if digests else None
    return hashlib.sha256("".join(digests).encode()).hexdigest()
