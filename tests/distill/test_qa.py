"""SQuAD: windows and answer positions, post-processing on synthetic logits, the official EM/F1,
and `distill finetune` / `distill eval` end to end on a tiny model and a tiny SQuAD file."""
import json
import os

import numpy as np
import pytest

from distill.evaluation.metrics import (best_null_threshold, exact_match, f1_score, normalize_answer, ranking_auc, squad,
                            squad_v2_report)
from distill.data.qa import QACollator, answer_positions, read_examples, squad_json_corpus
from distill.evaluation.squad import best_spans, postprocess
from distill.data.shards import CorpusError
from tests.distill.conftest import qa_tokenizer, write_squad_json
from tests.distill.test_train import common, kill_then_resume, read_log, run_cli

CONTEXT = "Alice lives in Paris. Bob lives in the city of Rome."
#          0     6     12 15   20 22  26    32 35  39   44 47  51


def _row(question="Where does Bob live?", text="Rome", start=47, impossible=False, qid="q"):
    answers = {"text": [] if impossible else [text], "answer_start": [] if impossible else [start]}
    return {"id": qid, "question": question, "context": CONTEXT, "answers": answers, "is_impossible": impossible}


# --------------------------------------------------------------------------------------------------
# Features


def test_one_window_holds_the_whole_context():
    enc = QACollator(qa_tokenizer(), max_seq_length=64, doc_stride=2, max_query_length=8).encode([_row()])
    # [CLS] where does bob live ? [SEP] alice lives in paris . bob lives in the city of rome . [SEP]
    #   0     1    2    3   4   5   6     7     8    9   10   11  12  13   14  15  16  17  18  19  20
    assert enc["example_index"] == [0]
    assert (enc["start_positions"], enc["end_positions"]) == ([18], [18])
    assert enc["offsets"][0][18] == (47, 51) and enc["offsets"][0][6] == (-1, -1)


def test_sliding_windows_share_doc_stride_tokens_and_miss_answers_point_at_cls():
    collator = QACollator(qa_tokenizer(), max_seq_length=16, doc_stride=2, max_query_length=8)
    enc = collator.encode([_row(), _row(text="Paris", start=15, qid="p")])
    tok = qa_tokenizer().convert_ids_to_tokens
    # 16 tokens: [CLS] + 5 question + [SEP] + 8 context + [SEP]; the second window starts 2 tokens back
    assert tok(enc["input_ids"][0])[7:15] == ["alice", "lives", "in", "paris", ".", "bob", "lives", "in"]
    assert tok(enc["input_ids"][1])[7:14] == ["lives", "in", "the", "city", "of", "rome", "."]
    assert enc["example_index"] == [0, 0, 1, 1]
    # Rome: outside window 0 -> [CLS]; token 12 of window 1.  Paris: token 10 of window 0 only.
    assert enc["start_positions"] == [0, 12, 10, 0] and enc["end_positions"] == [0, 12, 10, 0]
    batch = collator([_row()])
    assert batch["input_ids"].shape == (2, 16) and batch["start_positions"].tolist() == [0, 12]


def test_multi_token_answer_and_long_question():
    collator = QACollator(qa_tokenizer(), max_seq_length=64, doc_stride=2, max_query_length=3)
    enc = collator.encode([_row(text="the city of Rome", start=35)])
    # the question is cut to 3 tokens: [CLS] where does bob [SEP] alice ... (context from 5)
    assert enc["input_ids"][0][4] == qa_tokenizer().sep_token_id
    assert (enc["start_positions"], enc["end_positions"]) == ([13], [16])


def test_unanswerable_points_at_cls_in_every_window():
    collator = QACollator(qa_tokenizer(), max_seq_length=16, doc_stride=2, max_query_length=8)
    enc = collator.encode([_row(impossible=True)])
    assert enc["start_positions"] == [0, 0] and enc["end_positions"] == [0, 0]


def test_misplaced_answer_and_bad_settings_are_refused():
    with pytest.raises(CorpusError, match="answer 'Rome' is not at answer_start 40"):
        answer_positions(_row(start=40), [(0, 5)])
    with pytest.raises(ValueError, match="doc_stride 8 must be smaller"):
        QACollator(qa_tokenizer(), max_seq_length=16, doc_stride=8, max_query_length=8)


def test_json_rows_and_corpus(tmp_path):
    path = write_squad_json(tmp_path / "s.json", n_paragraphs=2)
    rows = read_examples(str(path))
    assert len(rows) == 8 and sum(r["is_impossible"] for r in rows) == 2
    corpus = squad_json_corpus(str(path), str(tmp_path / "corpus"))
    assert [r["id"] for r in read_examples(corpus)] == [r["id"] for r in rows]

    data = json.loads(path.read_text())
    data["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(CorpusError, match=r"qas\[0\]: answer '\w+' is not at answer_start"):
        read_examples(str(tmp_path / "bad.json"))


# --------------------------------------------------------------------------------------------------
# Post-processing


def _offsets(n_windows, t, context_from):
    """(W, T, 2): token i >= context_from covers characters [2i, 2i + 1); the rest is not context."""
    out = np.full((n_windows, t, 2), -1)
    for i in range(context_from, t):
        out[:, i] = (2 * i, 2 * i + 1)
    return out


def test_best_span_across_windows():
    context = "abcdefghijklmnop"
    start, end = np.zeros((2, 6)), np.zeros((2, 6))
    start[0, 3], end[0, 4] = 2.0, 2.0  # window 0: span 3..4 scores 4
    start[1, 3:], end[1, 3:] = [-20.0, 3.0, 9.0], [9.0, 2.0, -20.0]  # window 1: 5..3 (9 + 9) has end < start;
    start[1, 1], end[1, 1] = 20.0, 20.0  # the question is not context      # the best valid span is 4..4 (5)
    answers = postprocess(start, end, [0, 0], _offsets(2, 6, 3), [context], allow_null=False)
    assert answers == [context[8:9]]  # token 4 -> characters [8, 9)


def test_max_answer_length_and_null_threshold():
    start, end = np.zeros((1, 8)), np.zeros((1, 8))
    start[0, 2], end[0, 7] = 5.0, 4.5  # 6 tokens long: too long for max_answer_length 5
    start[0, 3], end[0, 3] = 1.0, 1.0  # the best valid span: 2..3, 5 + 1 = 6
    offsets, ctx = _offsets(1, 8, 2), ["x" * 16]
    assert postprocess(start, end, [0], offsets, ctx, max_answer_length=5, allow_null=False) == [ctx[0][4:7]]
    start[0, 0], end[0, 0] = 4.0, 3.0  # null score 7 > best span 6
    assert postprocess(start, end, [0], offsets, ctx, max_answer_length=5) == [""]
    assert postprocess(start, end, [0], offsets, ctx, max_answer_length=5, null_threshold=1.5) == [ctx[0][4:7]]
    assert postprocess(start, end, [0], offsets, ctx, max_answer_length=5, allow_null=False) == [ctx[0][4:7]]


def test_null_score_is_the_lowest_over_windows():
    start, end = np.zeros((2, 4)), np.zeros((2, 4))
    start[:, 0] = end[:, 0] = [5.0, 0.5]  # null scores 10 and 1
    start[0, 2], end[0, 2] = 2.0, 2.0  # span score 4 beats the lowest null score
    assert postprocess(start, end, [0, 0], _offsets(2, 4, 2), ["abcdefgh"]) == ["e"]


def test_postprocess_refuses_mismatched_inputs():
    s = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"end_logits \(2, 3\)"):
        postprocess(s, np.zeros((2, 3)), [0, 0], _offsets(2, 4, 1), ["ab"])
    with pytest.raises(ValueError, match=r"example_index has shape \(3,\)"):
        postprocess(s, s, [0, 0, 0], _offsets(2, 4, 1), ["ab"])
    with pytest.raises(ValueError, match="offsets has shape"):
        postprocess(s, s, [0, 0], _offsets(2, 5, 1), ["ab"])
    with pytest.raises(ValueError, match="but there are 1 contexts"):
        postprocess(s, s, [0, 1], _offsets(2, 4, 1), ["ab"])
    with pytest.raises(ValueError, match=r"examples \[1\] have no windows"):
        postprocess(s, s, [0, 0], _offsets(2, 4, 1), ["ab", "cd"])


# --------------------------------------------------------------------------------------------------
# EM / F1


def test_normalisation_and_per_answer_scores():
    assert normalize_answer("  The Eiffel-Tower!  in  a Paris ") == "eiffeltower in paris"
    assert exact_match("the Cat.", "cat") == 1 and exact_match("cats", "cat") == 0
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)  # P 2/2, R 2/3
    assert f1_score("", "") == 1.0 and f1_score("the", "") == 1.0 and f1_score("cat", "") == 0.0
    assert f1_score("cat cat", "cat") == pytest.approx(2 / 3)  # P 1/2, R 1/1


def test_squad_scores_split_by_answerability():
    out = squad(["cat sat", "something", "", "Paris"],
                [["the cat sat down", "a dog"], [], ["!"], ["paris", "Paris, France"]])
    # q1 F1 0.8 EM 0; q2 NoAns answered 0; q3 gold "!" normalises to "" -> NoAns, "" right; q4 EM 1
    assert out["exact"] == pytest.approx(50.0) and out["f1"] == pytest.approx(100 * 2.8 / 4)
    assert (out["HasAns_exact"], out["HasAns_f1"], out["HasAns_total"]) == (pytest.approx(50.0), pytest.approx(90.0), 2)
    assert (out["NoAns_exact"], out["NoAns_f1"], out["NoAns_total"]) == (50.0, 50.0, 2)
    assert out["total"] == 4 and out["score"] == out["f1"]
    with pytest.raises(ValueError, match="2 predictions for 1 questions"):
        squad(["a", "b"], [["a"]])


# Five questions worked by hand: (gold answers, best span, null_diff, F1 if answered, F1 if abstaining)
#   q1 HasAns "paris"   span "paris"  -2.0   1     0
#   q2 NoAns            span "london" -1.0   0     1
#   q3 HasAns "red car" span "car"     0.5   2/3   0    (P 1/1, R 1/2)
#   q4 NoAns            span "x"       3.0   0     1
#   q5 HasAns "blue"    span "green"   1.0   0     0
GOLDS = [["paris"], [], ["red car"], [], ["blue"]]
SPANS = ["paris", "london", "car", "x", "green"]
DIFFS = [-2.0, -1.0, 0.5, 3.0, 1.0]


def test_best_null_threshold_by_hand():
    # all null: q2 + q4 = 2 of 5; answering by rising null_diff adds +1 (q1), -1 (q2), +2/3 (q3), 0 (q5), -1 (q4)
    # running totals 3, 2, 2.67, 2.67, 1.67: the best is 3 after q1, at its null_diff
    assert best_null_threshold(SPANS, DIFFS, GOLDS) == (-2.0, pytest.approx(60.0))
    assert best_null_threshold(SPANS, DIFFS, GOLDS, "exact") == (-2.0, pytest.approx(60.0))
    # q1 and q2 tied: no threshold answers one without the other (+1 - 1 = 0); then q3 gives 2.67
    tied = [-2.0, -2.0, 0.5, 3.0, 1.0]
    assert best_null_threshold(SPANS, tied, GOLDS) == (0.5, pytest.approx(100 * (2 + 2 / 3) / 5))
    # EM: q3's "car" is not exact, so the tie group and q3 add nothing: abstaining everywhere is best
    assert best_null_threshold(SPANS, tied, GOLDS, "exact") == (-np.inf, pytest.approx(40.0))
    # a question without a valid span (+inf) is never answered
    assert best_null_threshold(["", "x"], [np.inf, 5.0], [["bee"], []]) == (-np.inf, pytest.approx(50.0))
    with pytest.raises(ValueError, match="null_diff has shape"):
        best_null_threshold(SPANS, DIFFS[:4], GOLDS)


def test_squad_v2_report_by_hand():
    out = squad_v2_report(SPANS, DIFFS, GOLDS, tuned_threshold=0.5)
    # threshold 0 answers q1, q2: 1 + 0 + 0 + 1 (q4 abstains) + 0 = 2 of 5
    assert out["f1"] == pytest.approx(40.0) and out["HasAns_f1"] == pytest.approx(100 / 3)
    # forced: q1 1, q3 2/3, q5 0 over the 3 answerable questions
    assert out["hasans_f1_forced"] == pytest.approx(100 * (5 / 3) / 3)
    assert out["hasans_exact_forced"] == pytest.approx(100 / 3)
    assert out["null_baseline_f1"] == pytest.approx(40.0)
    # threshold 0.5 answers q1, q2, q3: 1 + 0 + 2/3 + 1 + 0
    assert out["f1_tuned"] == pytest.approx(100 * (8 / 3) / 5) and out["null_threshold"] == 0.5
    assert (out["oracle_threshold"], out["oracle_f1"]) == (-2.0, pytest.approx(60.0))
    assert "f1_tuned" not in squad_v2_report(SPANS, DIFFS, GOLDS)
    # unanswerable q2 (-1.0), q4 (3.0) against answerable q1 (-2.0), q3 (0.5), q5 (1.0): q2 beats
    # q1 only, q4 beats all three: 4 of 6 pairs
    assert out["noans_auc"] == pytest.approx(4 / 6)


def test_ranking_auc_against_all_pairs():
    assert ranking_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(3.5 / 4)  # one tie: 1/2
    assert ranking_auc(np.array([1.0]), np.array([])) is None
    rng = np.random.default_rng(0)
    for _ in range(20):
        pos, neg = rng.integers(0, 6, rng.integers(1, 9)).astype(float), rng.integers(0, 6, rng.integers(1, 9)).astype(float)
        pairs = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
        assert ranking_auc(pos, neg) == pytest.approx(pairs)


def test_best_spans_give_the_null_margin():
    # one window of 4 context tokens: best span tokens 2..3 (1.5 + 2.0), null 4.0 + 0.5
    start = np.array([[4.0, 0.0, 1.5, 0.2]])
    end = np.array([[0.5, 0.0, 0.1, 2.0]])
    offsets = np.array([[[-1, -1], [0, 2], [3, 5], [6, 8]]])
    spans, diff = best_spans(start, end, [0], offsets, ["ab cd ef"])
    assert spans == ["cd ef"] and diff.tolist() == pytest.approx([4.5 - 3.5])
    assert postprocess(start, end, [0], offsets, ["ab cd ef"]) == [""]
    assert postprocess(start, end, [0], offsets, ["ab cd ef"], null_threshold=1.0) == ["cd ef"]


# --------------------------------------------------------------------------------------------------
# distill finetune / eval


def _qa_args(out, encoder, train, dev=None, **extra):
    items = {"task": "squad", "model.teacher": encoder, "data.train": train, "data.max_seq_length": 24,
             "data.doc_stride": 4, "data.max_query_length": 12, "train.max_steps": 4, "optim.lr": 1e-3}
    if dev is not None:
        items |= {"data.dev": dev, "train.eval_every": 2}
    return ["finetune", *common(out, **{**items, **extra})]


def test_finetune_and_eval_squad(tmp_path, qa_encoder_dir, squad_train_json, squad_dev_json):
    from transformers import AutoModelForQuestionAnswering

    out = tmp_path / "qa"
    result = run_cli(*_qa_args(out, qa_encoder_dir, squad_train_json, squad_dev_json))
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "score", "windows"} <= set(metrics)
    assert metrics["total"] == 12 and metrics["HasAns_total"] == 9 and metrics["NoAns_total"] == 3
    assert metrics["windows"] > 12  # contexts longer than one 24-token window
    assert 0 <= metrics["f1"] <= 100 and metrics["score"] == metrics["f1"]
    log = read_log(out)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert {"start", "end", "loss"} <= set(log[0]) and sum("eval/f1" in r for r in log) == 2
    assert json.load(open(out / "best" / "metrics.json"))["step"] in (2, 4)
    assert os.path.exists(out / "data" / "train-corpus" / "manifest.json")
    model = AutoModelForQuestionAnswering.from_pretrained(out / "best")
    assert model.config.architectures == ["BertForQuestionAnswering"]

    result = run_cli("eval", "--model", out / "best", "--task", "squad", "--data", squad_dev_json,
                     "--max-seq-length", 24, "--doc-stride", 4, "--max-query-length", 12)
    evaluated = json.loads(result.stdout)
    assert evaluated["rows"] == 12 and evaluated["parameters"] > 0
    best = json.load(open(out / "best" / "metrics.json"))
    assert evaluated["f1"] == pytest.approx(best["f1"]) and evaluated["exact"] == pytest.approx(best["exact"])

    # Without the flags, eval takes the windows the checkpoint was trained with (its config.yaml)...
    implicit = json.loads(run_cli("eval", "--model", out / "best", "--task", "squad", "--data",
                                  squad_dev_json).stdout)
    assert (implicit["max_seq_length"], implicit["doc_stride"], implicit["max_query_length"]) == (24, 4, 12)
    assert implicit["windows"] == evaluated["windows"] and implicit["f1"] == pytest.approx(evaluated["f1"])
    # ...and a flag still wins: in 64-token windows every context fits in one.
    whole = json.loads(run_cli("eval", "--model", out / "best", "--task", "squad", "--data", squad_dev_json,
                               "--max-seq-length", 64).stdout)
    assert whole["max_seq_length"] == 64 and whole["doc_stride"] == 4 and whole["windows"] == 12


def test_finetune_squad_from_a_corpus_directory(tmp_path, qa_encoder_dir, squad_train_json):
    corpus = squad_json_corpus(str(squad_train_json), str(tmp_path / "corpus"))
    run_cli(*_qa_args(tmp_path / "qa", qa_encoder_dir, corpus, **{"train.max_steps": 1}))
    assert os.path.exists(tmp_path / "qa" / "final" / "model.safetensors")


def test_bad_qa_inputs_are_refused_before_training(tmp_path, qa_encoder_dir, encoder_dir, sst2_corpus,
                                                   squad_train_json):
    result = run_cli(*_qa_args(tmp_path / "a", qa_encoder_dir, sst2_corpus), ok=False)
    assert result.exit_code == 1 and "corpus is for task 'sst2', not 'squad'" in result.output

    data = json.loads(squad_train_json.read_text())
    data["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["text"] = "Atlantis"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = run_cli(*_qa_args(tmp_path / "b", qa_encoder_dir, bad), ok=False)
    assert result.exit_code == 1 and "qas[1]: answer 'Atlantis' is not at answer_start" in result.output
    assert not os.path.exists(tmp_path / "b" / "log.jsonl")

    result = run_cli(*_qa_args(tmp_path / "c", qa_encoder_dir, squad_train_json, **{"data.doc_stride": 9}), ok=False)
    assert result.exit_code == 2 and "data.doc_stride 9 must be < " in result.output
    result = run_cli("task", "--step", "prediction", *common(tmp_path / "d", task="squad", **{
        "model.teacher": qa_encoder_dir, "data.train": squad_train_json}), ok=False)
    assert result.exit_code == 1 and "has no trained qa head" in result.output

    result = run_cli("eval", "--model", encoder_dir, "--task", "squad", "--data", squad_train_json, ok=False)
    assert result.exit_code == 1 and "no trained QA head" in result.output


def test_squad_task_distillation_intermediate_then_prediction(tmp_path, qa_teacher_dir, qa_student_config_file,
                                                              squad_train_json, squad_dev_json):
    from transformers import AutoModelForQuestionAnswering

    windows = {"task": "squad", "model.teacher": qa_teacher_dir, "data.train": squad_train_json,
               "data.max_seq_length": 24, "data.doc_stride": 4, "data.max_query_length": 12,
               "train.max_steps": 3, "optim.lr": 1e-3}
    inter = tmp_path / "inter"
    run_cli("task", "--step", "intermediate", *common(inter, **windows, **{"model.student": qa_student_config_file}))
    assert {"embedding", "hidden", "attention", "loss"} <= set(read_log(inter)[0])

    pred = tmp_path / "pred"
    result = run_cli("task", "--step", "prediction", *common(pred, **windows, **{
        "model.student": inter / "final", "data.dev": squad_dev_json, "train.eval_every": 3,
        "distill.temperature": 2.0, "distill.hard_label_weight": 0.5}))
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["total"] == 12 and 0 <= metrics["f1"] <= 100
    log = read_log(pred)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert all(abs(r["loss"] - (r["soft"] + 0.5 * r["gold"])) < 1e-5 for r in log if "loss" in r)
    model = AutoModelForQuestionAnswering.from_pretrained(pred / "best")
    assert model.config.num_hidden_layers == 1 and model.config.architectures == ["BertForQuestionAnswering"]
    evaluated = json.loads(run_cli("eval", "--model", pred / "best", "--task", "squad", "--data",
                                   squad_dev_json).stdout)
    assert evaluated["f1"] == pytest.approx(metrics["f1"])


def test_default_max_seq_length_depends_on_the_task():
    from distill.config import load_config

    qa = load_config(None, ["task=squad", "model.teacher=x", "data.train=y"], stage="finetune")
    glue = load_config(None, ["task=sst2", "model.teacher=x", "data.train=y"], stage="finetune")
    assert (qa.data.max_seq_length, glue.data.max_seq_length) == (384, 128)


def test_squad_resume_ends_where_an_uninterrupted_run_would(tmp_path, monkeypatch, qa_encoder_dir, squad_train_json):
    from safetensors.torch import load_file

    extra = {"train.save_every": 2, "train.batch_size": 3}
    full, killed = tmp_path / "full", tmp_path / "killed"
    run_cli(*_qa_args(full, qa_encoder_dir, squad_train_json, **extra))
    kill_then_resume(monkeypatch, _qa_args(killed, qa_encoder_dir, squad_train_json, **extra), killed,
                     killed_after_step=2)
    a, b = load_file(full / "final" / "model.safetensors"), load_file(killed / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_eval_tunes_the_null_threshold_on_other_questions_only(qa_teacher_dir, squad_train_json, squad_dev_json):
    args = ["eval", "--model", qa_teacher_dir, "--task", "squad", "--data", squad_dev_json,
            "--max-seq-length", 24, "--doc-stride", 4, "--max-query-length", 12]
    result = json.loads(run_cli(*args, "--tune-data", squad_train_json).stdout)
    assert {"f1", "f1_tuned", "null_threshold", "hasans_f1_forced", "null_baseline_f1"} <= set(result)
    assert result["null_baseline_f1"] == pytest.approx(100 * result["NoAns_total"] / result["total"])
    refused = run_cli(*args, "--tune-data", squad_dev_json, ok=False)
    assert refused.exit_code == 1 and "shares" in refused.output and "not a result" in refused.output
