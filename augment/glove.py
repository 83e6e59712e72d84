"""GloVe nearest neighbours for multi-piece words (TinyBERT augmentation).

The text file is parsed once into a float32 matrix of unit-normalised rows and cached as a
``.npy`` file that later loads memory-mapped (about a second for 400k x 300). Queries are batched:
one matrix product against the whole table, then a top-k per row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class GloveFormatError(ValueError):
    """A GloVe text file line that is not ``word v1 ... vd`` with the file's dimension."""


def default_cache_dir() -> Path:
    root = os.environ.get("BERT_COMPRESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "bert_compress"
    )
    return Path(root) / "glove"


def parse_glove_text(path: str | Path, max_words: int | None = None) -> tuple[list[str], np.ndarray]:
    """Parse a GloVe text file into ``(words, vectors)``; vectors is (V, d) float32, not normalised.

    Only the first ``max_words`` lines are read when it is given (the authors' script silently read
    100,000; here a cap is an explicit choice). A word that appears twice keeps its first vector.

    Raises:
        GloveFormatError: naming the line number, for a line whose field count differs from the
            first line's or whose numbers do not parse, or for an empty file.
    """
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    duplicates = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if max_words is not None and len(words) >= max_words:
                break
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise GloveFormatError(f"{path}: line {lineno} is not valid UTF-8 ({e})") from None
            if not line.strip():
                continue
            fields = line.rstrip(" ").split(" ")
            if dim is None:
                dim = len(fields) - 1
                if dim < 1:
                    raise GloveFormatError(f"{path}: line {lineno} has no vector: {line[:80]!r}")
            # Some GloVe releases (840B) have words containing spaces: the vector is the last d fields.
            if len(fields) < dim + 1:
                raise GloveFormatError(
                    f"{path}: line {lineno} has {len(fields) - 1} numbers, expected {dim}: {line[:80]!r}"
                )
            word = " ".join(fields[: len(fields) - dim])
            try:
                vec = np.array(fields[len(fields) - dim :], dtype=np.float32)
            except ValueError:
                raise GloveFormatError(f"{path}: line {lineno} has a value that is not a number: {line[:80]!r}") from None
            if word in seen:
                duplicates += 1
                continue
            seen.add(word)
            words.append(word)
            rows.append(vec)
    if not words:
        raise GloveFormatError(f"{path}: no vectors found (empty file?)")
    if duplicates:
        log.warning("%s: %d duplicate words ignored (first vector kept)", path, duplicates)
    return words, np.stack(rows)


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """Unit-normalise rows in float32; an all-zero row stays zero (cosine 0 with everything)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


class GloveIndex:
    """Unit-normalised GloVe vectors with batched cosine nearest neighbours.

    Args:
        words: the vocabulary, row order.
        unit_vectors: (V, d) float32, rows of norm 1 (or 0); may be a read-only memmap.
    """

    def __init__(self, words: Sequence[str], unit_vectors: np.ndarray, source: str = "") -> None:
        if len(words) != unit_vectors.shape[0]:
            raise ValueError(f"{len(words)} words but {unit_vectors.shape[0]} vectors")
        self.words = list(words)
        self.vectors = unit_vectors
        self.index = {w: i for i, w in enumerate(self.words)}
        self.source = source
        self._cache: dict[tuple[str, int], list[str]] = {}
        self.cache_hits = 0
        self.cache_misses = 0

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    @classmethod
    def load(
        cls,
        path: str | Path,
        max_words: int | None = None,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
    ) -> "GloveIndex":
        """Load a GloVe text file, through the binary cache when ``use_cache``.

        The cache key is the file's absolute path, size and modification time, plus ``max_words``;
        a changed file makes a new entry. A directory holding ``vectors.npy`` + ``words.txt`` (a
        cache entry) is loaded directly.
        """
        path = Path(path)
        if path.is_dir():
            return cls._load_entry(path)
        if not path.is_file():
            raise FileNotFoundError(f"GloVe file not found: {path}")
        if not use_cache:
            words, vectors = parse_glove_text(path, max_words)
            return cls(words, normalise_rows(vectors), source=str(path))
        entry = Path(cache_dir or default_cache_dir()) / _cache_key(path, max_words)
        if not (entry / "meta.json").is_file():
            words, vectors = parse_glove_text(path, max_words)
            _write_entry(entry, words, normalise_rows(vectors), path, max_words)
        return cls._load_entry(entry, source=str(path))

    @classmethod
    def _load_entry(cls, entry: Path, source: str = "") -> "GloveIndex":
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{entry}: GloVe cache format {meta.get('format')} is not {CACHE_FORMAT}; delete it")
        vectors = np.load(entry / "vectors.npy", mmap_mode="r")
        words = (entry / "words.txt").read_text(encoding="utf-8").split("\n")[: vectors.shape[0]]
        return cls(words, vectors, source=source or meta.get("source", str(entry)))

    # -- queries -----------------------------------------------------------------------------
    def nearest(self, words: Sequence[str], k: int, chunk: int = 256) -> list[list[str]]:
        """The ``k`` nearest words by cosine for each query word (itself excluded).

        A word without a vector gets ``[]``. Ties are broken by row order (lower row first).
        Results are cached per (word, k).
        """
        out: list[list[str] | None] = [None] * len(words)
        todo: dict[str, list[int]] = {}
        for i, word in enumerate(words):
            hit = self._cache.get((word, k))
            if hit is not None:
                self.cache_hits += 1
                out[i] = hit
            elif word not in self.index:
                out[i] = []
            else:
                todo.setdefault(word, []).append(i)
        pending = list(todo)
        self.cache_misses += len(pending)
        for start in range(0, len(pending), chunk):
            batch = pending[start : start + chunk]
            rows = np.array([self.index[w] for w in batch])
            for word, ids in zip(batch, self._topk_rows(rows, k)):
                result = [self.words[j] for j in ids]
                self._cache[(word, k)] = result
                for i in todo[word]:
                    out[i] = result
        return out  # type: ignore[return-value]

    def _topk_rows(self, rows: np.ndarray, k: int) -> list[np.ndarray]:
        """Top-k row ids by cosine for each query row, excluding the row itself.  rows: (b,)."""
        scores = np.asarray(self.vectors[rows]) @ np.asarray(self.vectors).T  # (b, V)
        scores[np.arange(len(rows)), rows] = -np.inf
        k = min(k, scores.shape[1] - 1)
        if k <= 0:
            return [np.empty(0, dtype=np.int64) for _ in rows]
        # argpartition takes the k largest; then an exact sort by (-score, row id).
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        results = []
        for r in range(len(rows)):
            ids = part[r]
            # Pull in any row tied with the k-th score so the tie-break by id is exact.
            kth = scores[r, ids].min()
            ids = np.flatnonzero(scores[r] >= kth)
            order = np.lexsort((ids, -scores[r, ids]))
            results.append(ids[order][:k])
        return results


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _cache_key(path: Path, max_words: int | None) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{max_words}|{CACHE_FORMAT}"
    return f"{path.name}-{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def _write_entry(entry: Path, words: list[str], vectors: np.ndarray, source: Path, max_words: int | None) -> None:
    # Written into a temporary sibling and renamed, so a killed process never leaves half a cache.
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        np.save(tmp / "vectors.npy", vectors)
        (tmp / "words.txt").write_text("\n".join(words), encoding="utf-8")
        meta = {"format": CACHE_FORMAT, "source": str(source), "max_words": max_words,
                "rows": len(words), "dim": int(vectors.shape[1])}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.rename(tmp, entry)
        except OSError:  # another process won the race: theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
