import numpy as np
import pytest

from pipelines.tasks import TASKS, get_task


@pytest.mark.parametrize("name,expected", [("sst2", "sst2"), ("SST-2", "sst2"), ("rte", "rte"), ("RTE", "rte"),
                                           ("squad", "squad"), ("SQuAD_v2", "squad"), ("sts-b", "stsb"),
                                           ("MNLI-mismatched", "mnli")])
def test_task_names_any_spelling(name, expected):
    assert get_task(name).name == expected


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown task 'sst3'.*sst2"):
        get_task("sst3")


def test_column_positions_follow_the_glue_layout():
    assert get_task("cola").column_positions() == {"label": 1, "sentence": 3}
    assert get_task("mrpc").column_positions() == {"sentence1": 3, "sentence2": 4, "label": 0}
    assert get_task("mnli").column_positions() == {"premise": 8, "hypothesis": 9, "label": 11}
    for spec in TASKS.values():
        if spec.kind != "qa":
            positions = spec.column_positions()
            assert set(positions) == set(spec.text_fields) | {"label"}


def test_parse_label_names_ids_and_scores():
    qnli = get_task("qnli")
    assert qnli.parse_label("not_entailment") == 1
    assert qnli.parse_label(" entailment ") == 0
    assert qnli.parse_label(1) == qnli.parse_label("1") == qnli.parse_label(np.int64(1)) == 1
    assert get_task("sst2").parse_label("0") == 0
    assert get_task("stsb").parse_label("3.8") == pytest.approx(3.8)


@pytest.mark.parametrize("value", [None, "", "  ", "maybe", 2, -1, "-1", 1.5, True])
def test_parse_label_rejects_non_labels(value):
    with pytest.raises(ValueError):
        get_task("qnli").parse_label(value)


def test_parse_label_rejects_non_numbers_for_regression():
    with pytest.raises(ValueError, match="not a number"):
        get_task("stsb").parse_label("high")
