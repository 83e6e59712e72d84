import pytest

from distill.modules.mapping import MappingError, build_mapping, teacher_layers, validate_mapping
from tests.distill.conftest import tiny_config


@pytest.mark.parametrize("strategy, n_s, n_t, expected", [
    ("uniform", 4, 12, [3, 6, 9, 12]),  # TinyBERT-4 from BERT-base: g(m) = 3m
    ("uniform", 6, 12, [2, 4, 6, 8, 10, 12]),
    ("uniform", 4, 6, [1, 3, 4, 6]),  # not a multiple: floor(m * 6 / 4)
    ("uniform", 3, 3, [1, 2, 3]),
    ("top", 2, 6, [5, 6]),
    ("bottom", 2, 6, [1, 2]),
    ([2, 2, 5], 3, 6, [2, 2, 5]),
])
def test_teacher_layers(strategy, n_s, n_t, expected):
    assert teacher_layers(strategy, n_s, n_t) == expected


@pytest.mark.parametrize("strategy, n_s, n_t, message", [
    ("middle", 2, 4, "unknown layer mapping 'middle'"),
    ("uniform", 6, 4, "no deeper than the teacher"),
    ([1, 2], 3, 6, "has 2 entries; the student has 3"),
    ([1, 7], 2, 6, r"teacher layers \[7\] out of range 1..6"),
])
def test_bad_strategies(strategy, n_s, n_t, message):
    with pytest.raises(MappingError, match=message):
        teacher_layers(strategy, n_s, n_t)


def test_build_mapping_entries():
    entries = build_mapping("uniform", 2, 4)
    assert entries[0] == {"student_layer": 0, "teacher_layer": 0, "feature": "embedding", "loss": "embedding_mse"}
    assert [(e["student_layer"], e["teacher_layer"], e["feature"]) for e in entries[1:]] == [
        (1, 2, "hidden"), (2, 4, "hidden"), (1, 2, "attention"), (2, 4, "attention")]
    assert [e["feature"] for e in build_mapping("top", 2, 4, ["attention"])] == ["attention", "attention"]


def test_validate_mapping_against_models():
    teacher, student = tiny_config(layers=4, heads=4), tiny_config(layers=2, hidden=16, heads=4)
    validate_mapping(build_mapping("uniform", 2, 4), student, teacher)
    with pytest.raises(MappingError, match="student has 2 heads, teacher 4"):
        validate_mapping(build_mapping("uniform", 2, 4), tiny_config(layers=2, hidden=16, heads=2), teacher)
    # without attention terms the head counts may differ
    validate_mapping(build_mapping("uniform", 2, 4, ["hidden"]), tiny_config(layers=2, hidden=16, heads=2), teacher)
    with pytest.raises(MappingError, match="student layer 3 out of range"):
        validate_mapping([{"student_layer": 3, "teacher_layer": 1, "feature": "hidden"}], student, teacher)
    with pytest.raises(MappingError, match="vocabulary"):
        validate_mapping([], tiny_config(layers=2, hidden=16, vocab_size=99), teacher)
