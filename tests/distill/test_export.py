"""`distill export` (distill/export.py) on tiny random BERTs and RoBERTas: classifier, regressor, QA,
and a compact pruned QA model with uneven heads and FFN units per layer.

Expectations are independent of the exporter: ONNX Runtime's outputs against the PyTorch model's
(a pruned model's reference is its saved full-size form, pruned weights zero, loaded by plain
``from_pretrained``, so the compacting is checked too); the exported weight shapes against the
widths computed from the mask by hand."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from distill.cli import main
from distill.export import INT8_FILE, ONNX_FILE, OrtModel, export
from distill.modules.pruning import PruneMask, save_pruned
from tests.distill.conftest import VOCAB, tiny_config, tiny_tokenizer

L, NH, HS, H, I = 3, 4, 8, 32, 64  # tiny_config(layers=3): hidden 32, 4 heads of 8, FFN 64
# Uneven on purpose: 3, 1 and 4 heads; FFN units 40, 0 (a layer whose FFN is gone) and 17.
HEADS = [[1, 0, 1, 1], [0, 1, 0, 0], [1, 1, 1, 1]]
FFN = [40, 0, 17]
#: ONNX Runtime fp32 against PyTorch (issue 23).
TOLERANCE = 1e-4


def roberta_tokenizer():
    """A byte-level BPE tokenizer without merges (every byte a token): RoBERTa's kind, whose inputs
    have no token_type_ids."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    return RobertaTokenizer(vocab={t: i for i, t in enumerate(specials + sorted(ByteLevel.alphabet()))}, merges=[])


def build(family: str, head: str, seed: int = 0):
    """(model, tokenizer): a tiny random model of ``family`` with a ``head`` (classification,
    regression, qa)."""
    import transformers

    torch.manual_seed(seed)
    labels = {"classification": {"num_labels": 3}, "regression": {"num_labels": 1, "problem_type": "regression"},
              "qa": {}}[head]
    kind = "QuestionAnswering" if head == "qa" else "SequenceClassification"
    if family == "bert":
        return getattr(transformers, f"BertFor{kind}")(tiny_config(layers=L, **labels)).eval(), tiny_tokenizer()
    tokenizer = roberta_tokenizer()
    config = transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=H, num_hidden_layers=L,
                                        num_attention_heads=NH, intermediate_size=I, max_position_embeddings=66,
                                        pad_token_id=1, **labels)
    return getattr(transformers, f"RobertaFor{kind}")(config).eval(), tokenizer


def save(model, tokenizer, directory):
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def uneven_mask() -> PruneMask:
    ffn = torch.zeros(L, I, dtype=torch.bool)
    g = torch.Generator().manual_seed(3)
    for layer, n in enumerate(FFN):
        ffn[layer, torch.randperm(I, generator=g)[:n]] = True
    return PruneMask(torch.tensor(HEADS, dtype=torch.bool), ffn)


def batch(names, vocab_size: int, b: int, t: int, seed: int) -> dict[str, np.ndarray]:
    """(b, t) inputs: random ids, rows padded to different lengths, a second segment in token types."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab_size, (b, t), generator=g)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    mask = (torch.arange(t)[None] < lengths[:, None]).long()
    types = ((torch.arange(t)[None] >= lengths[:, None] // 2) & mask.bool()).long()
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {n: arrays[n].numpy() for n in names}


def torch_outputs(model, feed) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    return {k: getattr(out, k).numpy() for k in ("logits", "start_logits", "end_logits") if getattr(out, k, None)
            is not None}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


SIZES = [(1, 7), (1, 40), (4, 7), (4, 40)]  # two batch sizes x two lengths


@pytest.mark.parametrize("family,head", [("bert", "classification"), ("bert", "regression"), ("bert", "qa"),
                                         ("roberta", "classification"), ("roberta", "qa")])
def test_export_runs_in_onnx_runtime_equal_to_pytorch(tmp_path, family, head):
    model, tokenizer = build(family, head)
    manifest = export(str(save(model, tokenizer, tmp_path / "model")), str(tmp_path / "onnx"))
    ort_model = OrtModel(str(tmp_path / "onnx" / ONNX_FILE))
    expected_inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if family == "bert" else [])
    assert ort_model.input_names == manifest["inputs"] == expected_inputs
    assert manifest["task"] == head and manifest["pruned"] is None
    for i, (b, t) in enumerate(SIZES):
        feed = batch(expected_inputs, model.config.vocab_size, b, t, seed=i)
        got, want = ort_model.run(feed), torch_outputs(model, feed)
        assert got.keys() == want.keys()
        assert all(got[k].shape == want[k].shape for k in got)
        assert max_diff(got, want) <= TOLERANCE, (b, t)
    # served without this package: the tokenizer and labels beside the graph
    from transformers import AutoConfig, AutoTokenizer

    served = AutoTokenizer.from_pretrained(tmp_path / "onnx")
    assert served("a film", "the plot")["input_ids"] == tokenizer("a film", "the plot")["input_ids"]
    assert AutoConfig.from_pretrained(tmp_path / "onnx").num_labels == model.config.num_labels


def _onnx_weight_shapes(path) -> Counter:
    """The 2-d float initializers of a graph, as sorted shapes (the exporter may store a Linear's
    weight transposed)."""
    import onnx

    graph = onnx.load(str(path)).graph
    return Counter(tuple(sorted(t.dims)) for t in graph.initializer
                   if len(t.dims) == 2 and t.data_type == onnx.TensorProto.FLOAT)


def _expected_weight_shapes(full_model, mask: PruneMask) -> Counter:
    """The full model's 2-d weights, with each encoder layer's six Linears at the widths the mask
    keeps (by hand: q/k/v (H, heads x HS), attention output (heads x HS, H), FFN in (H, units) and
    out (units, H); a layer without FFN units keeps two (0, H) matrices)."""
    shapes = Counter(tuple(sorted(p.shape)) for name, p in full_model.named_parameters()
                     if p.dim() == 2 and ".encoder.layer." not in name)
    for heads, units in zip(mask.heads.sum(1).tolist(), mask.ffn.sum(1).tolist()):
        for shape in [(H, heads * HS)] * 4 + [(H, units)] * 2:
            shapes[tuple(sorted(shape))] += 1
    return shapes


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_pruned_model_exports_compact_with_uneven_layers_and_equal_outputs(tmp_path, family):
    model, tokenizer = build(family, "qa", seed=1)
    mask = uneven_mask()
    save_pruned(model, mask, str(tmp_path / "pruned"), tokenizer)  # saved full size, pruned weights zero
    from transformers import AutoModelForQuestionAnswering

    reference = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "pruned").eval()  # plain, not compacted
    manifest = export(str(tmp_path / "pruned"), str(tmp_path / "onnx"), quantize="int8")
    assert manifest["pruned"] == {"heads_per_layer": [3, 1, 4], "ffn_per_layer": FFN}

    shapes = _onnx_weight_shapes(tmp_path / "onnx" / ONNX_FILE)
    assert shapes == _expected_weight_shapes(reference, mask)
    assert shapes != _expected_weight_shapes(reference, PruneMask.full(L, NH, I))  # not the full widths
    ort_model = OrtModel(str(tmp_path / "onnx" / ONNX_FILE))
    for i, (b, t) in enumerate(SIZES):
        feed = batch(ort_model.input_names, reference.config.vocab_size, b, t, seed=10 + i)
        assert max_diff(ort_model.run(feed), torch_outputs(reference, feed)) <= TOLERANCE, (b, t)
    assert (tmp_path / "onnx" / INT8_FILE).stat().st_size < (tmp_path / "onnx" / ONNX_FILE).stat().st_size


def _int8_error(fp32: dict, int8: dict) -> float:
    """max |int8 - fp32| over the outputs, relative to the largest |fp32| output."""
    return max_diff(int8, fp32) / max(float(np.abs(v).max()) for v in fp32.values())


@pytest.mark.parametrize("head", ["classification", "qa"])
def test_int8_export_is_quantized_runs_and_stays_close(tmp_path, head):
    """Dynamic int8 rounds each weight matrix to 255 levels of its largest |weight| and each
    activation to 256 levels of its batch's range: relative errors of ~1% a matrix product, over
    the 3 layers' 6 products each and the head. The bound, 15% of the largest |output|, is loose on
    purpose (measured here: 0.4% to 3%); a broken quantization (wrong scales, a dropped bias) lands
    far above it."""
    import onnx

    model, tokenizer = build("bert", head, seed=2)
    export(str(save(model, tokenizer, tmp_path / "model")), str(tmp_path / "onnx"), quantize="int8")
    graph = onnx.load(str(tmp_path / "onnx" / INT8_FILE)).graph
    assert {n.op_type for n in graph.node} & {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    assert sum(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer) >= 6 * L
    fp32, int8 = OrtModel(str(tmp_path / "onnx" / ONNX_FILE)), OrtModel(str(tmp_path / "onnx" / INT8_FILE))
    for i, (b, t) in enumerate(SIZES):
        feed = batch(fp32.input_names, len(VOCAB), b, t, seed=20 + i)
        got, want = int8.run(feed), fp32.run(feed)
        assert all(got[k].shape == want[k].shape for k in want)
        assert _int8_error(want, got) < 0.15, (b, t)


def run_cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_cli_writes_the_serving_directory(tmp_path):
    model, tokenizer = build("bert", "classification", seed=3)
    save(model, tokenizer, tmp_path / "model")
    result = run_cli("export", tmp_path / "model", "--output", tmp_path / "onnx", "--quantize", "int8")
    summary = json.loads(result.stdout)  # stdout is the JSON alone; the exporter logs to stderr
    assert summary["task"] == "classification" and summary["files"] == {"fp32": ONNX_FILE, "int8": INT8_FILE}
    assert summary["check"]["max_abs_diff_fp32"] <= TOLERANCE
    written = {p.name for p in (tmp_path / "onnx").iterdir()}
    assert {ONNX_FILE, INT8_FILE, "export.json", "config.json", "tokenizer.json"} <= written
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert manifest["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"] and manifest["max_length"] == 64


def test_cli_errors_name_the_problem(tmp_path, encoder_dir):
    from transformers import DistilBertConfig

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")
    result = run_cli("export", tmp_path / "notes", "--output", tmp_path / "o1", ok=False)
    assert result.exit_code != 0 and "is not a model directory" in result.output

    DistilBertConfig(vocab_size=len(VOCAB), architectures=["DistilBertForSequenceClassification"]).save_pretrained(
        tmp_path / "distilbert")
    result = run_cli("export", tmp_path / "distilbert", "--output", tmp_path / "o2", ok=False)
    assert result.exit_code != 0 and "model type 'distilbert' is not supported" in result.output

    result = run_cli("export", encoder_dir, "--output", tmp_path / "o3", ok=False)  # a masked LM
    assert result.exit_code != 0 and "has no task head" in result.output
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))

    model, tokenizer = build("bert", "regression", seed=4)
    save(model, tokenizer, tmp_path / "model")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "old.txt").write_text("keep me")
    result = run_cli("export", tmp_path / "model", "--output", tmp_path / "taken", ok=False)
    assert result.exit_code != 0 and "--overwrite" in result.output
    assert (tmp_path / "taken" / "old.txt").exists()
    run_cli("export", tmp_path / "model", "--output", tmp_path / "taken", "--overwrite")
    assert not (tmp_path / "taken" / "old.txt").exists() and (tmp_path / "taken" / ONNX_FILE).exists()
    result = run_cli("export", tmp_path / "model", "--output", tmp_path / "model", "--overwrite", ok=False)
    assert result.exit_code != 0 and "would replace the model" in result.output


def test_the_documented_serving_snippet_serves_an_export(tmp_path, capsys):
    """docs/deploy.md's snippet, run as written on an export (fp32 graph, so its labels can be
    checked against PyTorch's argmax; the snippet itself serves model_quantized.onnx)."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy.md").read_text(encoding="utf-8")
    after = docs.split("<!-- serve-snippet -->", 1)[1]
    code = after.split("```python\n", 1)[1].split("```", 1)[0]
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    model, tokenizer = build("bert", "classification", seed=6)
    save(model, tokenizer, tmp_path / "model")
    export(str(tmp_path / "model"), str(tmp_path / "onnx"))
    code = code.replace('"out/sst2-onnx"', repr(str(tmp_path / "onnx"))).replace("model_quantized.onnx", ONNX_FILE)
    exec(compile(code, "deploy.md snippet", "exec"), {})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    enc = tokenizer(["a gripping , funny film", "dull and far too long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        labels = model(**enc).logits.argmax(-1).tolist()
    assert printed == str([model.config.id2label[i] for i in labels])
