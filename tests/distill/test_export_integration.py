"""`distill export` of the real MiniLM encoder: ONNX Runtime fp32 equals PyTorch within 1e-4 on every
SST-2 dev sentence and on every window of the SQuAD 2.0 evaluation holdout (reported on, never tuned
on). The task heads are randomly initialised: equality needs the real encoder's weights and the
real inputs' lengths and padding, not a trained head."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.export import ONNX_FILE, OrtModel, export

TOLERANCE = 1e-4
BATCH = 32


def _with_head(assets, head: str, directory, **kw):
    """MiniLM with a seeded random ``head`` and its tokenizer, saved to ``directory``."""
    from transformers import AutoTokenizer

    from distill.modules.models import load_model

    minilm = str(assets / "models" / "minilm-l6-mlm")
    torch.manual_seed(0)
    model = load_model(minilm, head, **kw).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def _max_diff(model, ort_model, batch: dict) -> float:
    with torch.no_grad():
        want = model(**batch)
    got = ort_model(**batch)
    return max(float((getattr(got, k) - getattr(want, k)).abs().max()) for k in ort_model.output_names)


@pytest.mark.integration
def test_minilm_sst2_classifier_equals_pytorch_on_every_dev_sentence(tmp_path, real_assets):
    from distill.data.stream import Collator
    from distill.data.glue import read_tsv
    from pipelines.tasks import get_task

    model, tokenizer = _with_head(real_assets, "classification", tmp_path / "model", num_labels=2)
    export(str(tmp_path / "model"), str(tmp_path / "onnx"))
    ort_model = OrtModel(str(tmp_path / "onnx" / ONNX_FILE))
    rows = read_tsv(str(real_assets / "glue" / "SST-2" / "dev.tsv"), get_task("sst2"))
    collator = Collator(tokenizer, ["sentence"], max_length=128, with_labels=False)
    diffs = [_max_diff(model, ort_model, collator(rows[i:i + BATCH])) for i in range(0, len(rows), BATCH)]
    assert len(rows) == 872
    assert max(diffs) <= TOLERANCE, f"max |ORT - PyTorch| {max(diffs):.2e}"


@pytest.mark.integration
def test_minilm_qa_model_equals_pytorch_on_every_holdout_window(tmp_path, squad_assets):
    from distill.data.qa import QACollator, read_examples

    model, tokenizer = _with_head(squad_assets, "qa", tmp_path / "model")
    export(str(tmp_path / "model"), str(tmp_path / "onnx"))
    ort_model = OrtModel(str(tmp_path / "onnx" / ONNX_FILE))
    rows = read_examples(str(squad_assets / "squad" / "squad2-eval-split.json"))
    collator = QACollator(tokenizer, max_seq_length=384, doc_stride=128, max_query_length=64)
    diffs, windows, lengths = [], 0, set()
    for i in range(0, len(rows), BATCH // 2):  # each chunk's windows padded to its longest
        enc = collator.encode(rows[i:i + BATCH // 2])
        inputs = {k: torch.tensor(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
        for j in range(0, len(inputs["input_ids"]), BATCH):
            diffs.append(_max_diff(model, ort_model, {k: v[j:j + BATCH] for k, v in inputs.items()}))
        windows += len(inputs["input_ids"])
        lengths.add(inputs["input_ids"].shape[1])
    assert len(rows) == 1629 and windows >= len(rows) and max(lengths) == 384 and len(lengths) > 1
    assert max(diffs) <= TOLERANCE, f"max |ORT - PyTorch| {max(diffs):.2e} over {windows} windows"
    assert np.isfinite(diffs).all()
