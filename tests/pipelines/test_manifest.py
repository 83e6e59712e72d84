import json
from pathlib import Path

import pytest

from pipelines.manifest import (CorpusError, build_manifest, fingerprint, load_corpus, read_manifest,
                                teacher_identity, write_manifest)


def test_fingerprint_is_canonical_and_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


SHARDS = [{"file": "shard-00001-of-00002.arrow", "rows": 3, "originals": 1, "variants": 2},
          {"file": "shard-00000-of-00002.arrow", "rows": 0, "originals": 0, "variants": 0}]


def test_build_manifest_reconciles_counts():
    m = build_manifest({"format": "x"}, SHARDS, {"read": 3, "rejected": 2})
    assert m["counts"] == {"read": 3, "rejected": 2, "accepted": 1, "originals": 1, "variants": 2, "rows": 3}
    assert [s["file"] for s in m["shards"]] == ["shard-00000-of-00002.arrow", "shard-00001-of-00002.arrow"]
    with pytest.raises(CorpusError, match="originals 1 != accepted 2"):
        build_manifest({}, SHARDS, {"read": 3, "rejected": 1})


def test_manifest_written_atomically_and_read_back(tmp_path):
    assert read_manifest(str(tmp_path)) is None
    manifest = {"format": "bert-compress-augmented-corpus", "format_version": 1, "fingerprint": "f"}
    write_manifest(str(tmp_path), manifest)
    assert read_manifest(str(tmp_path)) == manifest
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary left
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CorpusError, match="expected bert-compress-augmented-corpus"):
        read_manifest(str(tmp_path))
    with pytest.raises(CorpusError, match="no manifest.json"):
        load_corpus(str(tmp_path / "nothing"))


def test_teacher_identity_hashes_weights_and_tokenizer(fake_models):
    teacher, _ = fake_models
    ident = teacher_identity(teacher)
    assert ident["weights_files"] == ["model.safetensors"] and len(ident["weights_sha256"]) == 64
    assert ident["tokenizer_sha256"] is not None
    # The files that declare special tokens (never candidates) are part of the teacher's identity.
    (Path(teacher) / "special_tokens_map.json").write_text('{"additional_special_tokens": ["film"]}')
    assert teacher_identity(teacher)["tokenizer_sha256"] != ident["tokenizer_sha256"]
