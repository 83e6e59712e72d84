"""``distill export``: a model of this project as ONNX, to serve without this package (issue 23).

Every model this project makes exports: GLUE classifiers and regressors, SQuAD QA models, and
pruned models of either, which export *compact*: their pruned heads and FFN units are gone from the
graph and each layer keeps its own width (what one ``BertConfig`` cannot describe, so plain
transformers cannot load a pruned model compact; see docs/deploy.md). The graph comes from torch's
own exporter (``torch.onnx.export(dynamo=True)``: torch.export, translated by onnxscript) at opset
23, whose Attention operator carries each layer's attention as one node, with dynamic batch and
sequence axes. ``quantize="int8"`` adds ONNX Runtime's dynamic quantization
(``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantized per batch at run
time, as Optimum's ``ORTQuantizer`` does for CPUs). No graph is edited by hand.

The output directory, laid out as Optimum's ONNX Runtime models are::

    model.onnx              fp32 graph: inputs (B, T) int64, outputs logits (B, C) or start/end_logits (B, T)
    model_quantized.onnx    with quantize="int8"
    tokenizer files         AutoTokenizer.from_pretrained(DIR) (fast tokenizer, tokenizer.json)
    config.json             the transformers config (labels; for a pruned model the *unpruned* widths)
    export.json             what a server needs: task, input and output names, labels, max length,
                            the trained window settings, kept heads/FFN units per layer, the ONNX
                            Runtime optimizers to leave out (``DISABLED_OPTIMIZERS``), the check below

At export the fp32 graph is run in ONNX Runtime on a generated batch and compared with the PyTorch
model (``check`` in export.json); a difference above ``CHECK_TOLERANCE`` is an ``ExportError``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
import warnings
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from distill.modules.models import ModelError, count_parameters
from distill.modules.pruning import load_pruned, read_mask

#: transformers model types whose export is tested (tests/distill/test_export.py).
SUPPORTED_TYPES = ("bert", "roberta")
ONNX_FILE, INT8_FILE, EXPORT_FILE = "model.onnx", "model_quantized.onnx", "export.json"
EXPORT_FORMAT = "bert-compress-onnx"
QUANTIZE = ("int8",)
#: Inputs a graph may take, in this order; each model takes those its tokenizer produces.
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUTS = {"classification": ("logits",), "qa": ("start_logits", "end_logits")}
#: ONNX opset of the graphs. 23 has the Attention operator: torch's exporter writes each layer's
#: scaled-dot-product attention as one node, which ONNX Runtime (>= 1.23) runs with its fused CPU
#: kernel. At opset 20 the same attention is MatMul/Softmax/Where nodes: a half-pruned MiniLM took
#: 37 ms instead of 23 ms at 1 x 384 tokens in ONNX Runtime fp32 (2-core Xeon, separate runs).
OPSET = 23
#: ONNX Runtime graph optimizers a session leaves out. SkipLayerNormFusion fuses each residual Add
#: with its LayerNorm; its fused CPU kernel (onnxruntime 1.32) was slower than the two ops it
#: replaces at every shape measured on the 2-core Xeon of docs/deploy.md: a MiniLM-shaped model, int8,
#: 18.2 -> 14.9 ms at 1 x 384 tokens, 793 -> 678 ms at 32 x 384, 64.7 -> 47.6 ms at 32 x 64
#: (fp32 too). export.json carries the list, so servers open sessions the same way.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
#: The export-time check: ONNX Runtime fp32 against PyTorch, max |difference| of any output. Float
#: reordering gives ~1e-6 on these models; more than this means a wrong graph, not rounding.
CHECK_TOLERANCE = 1e-4

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """A model directory or output directory that export cannot use, or a graph that failed its check."""


def require_onnx() -> None:
    """Raise ``ExportError`` naming the install command when the ``onnx`` extra is missing."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"distill export needs {', '.join(missing)}: pip install -e \".[onnx]\"")


# --------------------------------------------------------------------------------------------------
# What is exported


def task_head(config, model_dir: str) -> str:
    """``classification`` (GLUE classifier or regressor) or ``qa``, from ``config.architectures``.
    Raises ``ExportError`` for an unsupported model type or a model without a task head."""
    if config.model_type not in SUPPORTED_TYPES:
        raise ExportError(f"MODEL {model_dir}: model type {config.model_type!r} is not supported by distill "
                          f"export (supported: {', '.join(SUPPORTED_TYPES)})")
    archs = config.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "classification"
    if any(a.endswith("ForQuestionAnswering") for a in archs):
        return "qa"
    raise ExportError(f"MODEL {model_dir} has no task head (architectures {archs}): distill export takes a "
                      f"fine-tuned classifier, regressor or QA model (distill finetune / task / prune)")


def load_for_export(model_dir: str):
    """(model in eval mode, compacted when pruned; its head; its fast tokenizer).
    Raises ``ExportError`` naming what is wrong with ``model_dir``."""
    from transformers import AutoConfig, AutoTokenizer

    if not os.path.isdir(model_dir) or not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ExportError(f"MODEL {model_dir} is not a model directory (no config.json); give a checkpoint "
                          f"directory such as out/pred/best")
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
    head = task_head(config, model_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as e:
        raise ExportError(f"MODEL {model_dir} has no loadable tokenizer ({e}); the export ships the tokenizer "
                          f"beside the graph: save it with the model") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"MODEL {model_dir}: {type(tokenizer).__name__} is not a fast tokenizer; servers need "
                          f"tokenizer.json")
    try:
        model = load_pruned(model_dir, head)  # compacted when pruning.json says it is pruned
    except ModelError as e:
        raise ExportError(f"MODEL {model_dir}: {e}") from None
    return model.eval(), head, tokenizer


def input_names(model: nn.Module, tokenizer) -> list[str]:
    """The graph's inputs: those of ``INPUTS`` the tokenizer produces (RoBERTa's gives no
    ``token_type_ids``), so a server feeds the tokenizer's output as it comes."""
    names = [n for n in INPUTS if n in tokenizer.model_input_names]
    if "input_ids" not in names or "attention_mask" not in names:
        raise ExportError(f"tokenizer inputs {tokenizer.model_input_names} lack input_ids or attention_mask")
    return names


def max_length(config) -> int:
    """The longest sequence the position embeddings cover (RoBERTa's positions start after the
    padding index, so two fewer)."""
    n = config.max_position_embeddings
    return n - config.pad_token_id - 1 if config.model_type == "roberta" else n


class _Graph(nn.Module):
    """The model as the graph computes it: positional int64 inputs (B, T) named ``names``, a tuple of
    outputs (logits (B, C), or start/end logits (B, T))."""

    def __init__(self, model: nn.Module, head: str, names: list[str]):
        super().__init__()
        self.model, self.outputs, self.names = model, OUTPUTS[head], names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.names, inputs)), return_dict=True)
        return tuple(getattr(out, name) for name in self.outputs)


def example_inputs(names: list[str], vocab_size: int, batch: int = 2, length: int = 16, seed: int = 0,
                   pad_from: int | None = None) -> dict[str, np.ndarray]:
    """A generated batch (B, T) int64 of each input; the first row padded from ``pad_from``
    (default T // 2) so the attention mask is exercised."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 if pad_from is None else pad_from:] = 0
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
    return {n: arrays[n].numpy() for n in names}


def export_onnx(model: nn.Module, head: str, names: list[str], path: str, max_len: int) -> None:
    """Write ``model`` (eval mode) as an ONNX graph at ``path`` with batch and sequence dynamic
    (1 <= T <= ``max_len``). torch's exporter prints its progress; it goes to stderr, so stdout
    stays the command's JSON."""
    graph = _Graph(model, head, names).eval()
    # Example sizes above 1: torch.export specialises a dimension of size 0 or 1 to a constant.
    example = tuple(torch.from_numpy(a) for a in example_inputs(names, model.config.vocab_size).values())
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_len)
    dims = {n: {0: batch, 1: seq} for n in names}
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad(), warnings.catch_warnings():
        # batch and sequence are shared by every input: torch says so once per input name
        warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
        torch.onnx.export(graph, example, path, dynamo=True, input_names=names, output_names=list(graph.outputs),
                          dynamic_shapes=(tuple(dims[n] for n in names),), external_data=False,
                          opset_version=OPSET)


def quantize_int8(src: str, dst: str) -> None:
    """ONNX Runtime's dynamic int8 quantization of ``src`` into ``dst``: the weights of every MatMul
    with a constant operand (the Linear layers) to int8, their activations quantized per batch at
    run time. Embedding tables stay fp32 (a lookup costs nothing, and rounding them only loses
    accuracy); so do the attention products of two activations."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with contextlib.redirect_stdout(sys.stderr):
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"MatMulConstBOnly": True})


# --------------------------------------------------------------------------------------------------
# Running an export


def session(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session on ``path`` with its graph optimizations (the default level,
    ``ORT_ENABLE_ALL``: constant folding, GELU/MatMul/quantization fusions) but
    ``DISABLED_OPTIMIZERS``; ``threads`` intra-op threads (default: ONNX Runtime's, one per
    physical core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(DISABLED_OPTIMIZERS))


class OrtModel:
    """An exported graph behind the call of a transformers model: ``model(input_ids=..., ...)`` with
    (B, T) tensors returns ``.logits`` or ``.start_logits``/``.end_logits`` as float tensors, so the
    project's evaluation (``train.predict``, ``qa.evaluate_qa``) scores ONNX Runtime as it scores
    PyTorch. Inputs the graph does not take (labels, RoBERTa's token types) are ignored."""

    training = False

    def __init__(self, path: str, threads: int | None = None):
        self.session = session(path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def eval(self) -> "OrtModel":
        return self

    def train(self, mode: bool = True) -> "OrtModel":
        if mode:
            raise ValueError("an ONNX Runtime model cannot train")
        return self

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for (B, T) int64 arrays by name (extra names ignored)."""
        missing = [n for n in self.input_names if n not in feed]
        if missing:
            raise ValueError(f"the graph needs inputs {missing}")
        outs = self.session.run(None, {n: np.asarray(feed[n], dtype=np.int64) for n in self.input_names})
        return dict(zip(self.output_names, outs))

    def __call__(self, **inputs) -> SimpleNamespace:
        feed = {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        return SimpleNamespace(**{k: torch.from_numpy(v) for k, v in self.run(feed).items()})


def compare(model: nn.Module, head: str, ort_model: OrtModel, feed: dict[str, np.ndarray]) -> float:
    """max |ONNX Runtime - PyTorch| over every output on the batch ``feed``."""
    with torch.no_grad():
        ref = _Graph(model, head, list(feed))(*(torch.from_numpy(a) for a in feed.values()))
    got = ort_model.run(feed)
    return max(float(np.abs(got[name] - r.numpy()).max()) for name, r in zip(OUTPUTS[head], ref))


def _prepare_output(output_dir: str, model_dir: str, overwrite: bool) -> str:
    """A fresh temporary directory beside ``output_dir``; raises unless ``output_dir`` may be written."""
    out, src = os.path.abspath(output_dir), os.path.abspath(model_dir)
    if out == src or src.startswith(out + os.sep):
        raise ExportError(f"--output {output_dir} would replace the model it exports; choose another directory")
    if os.path.exists(out) and not overwrite:
        raise ExportError(f"--output {output_dir} exists; pass --overwrite to replace it")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"--output {output_dir} is a file, not a directory")
    tmp = out.rstrip(os.sep) + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return tmp


def export(model_dir: str, output_dir: str, quantize: str | None = None, overwrite: bool = False) -> dict:
    """Export ``model_dir`` (a checkpoint with a task head, pruned or not) to ``output_dir`` as laid
    out in the module docstring; returns export.json's contents. The directory appears whole or not
    at all (written beside it, then moved). Raises ``ExportError`` naming the flag at fault."""
    if quantize not in (None, *QUANTIZE):
        raise ExportError(f"--quantize must be one of {QUANTIZE}, got {quantize!r}")
    require_onnx()
    model, head, tokenizer = load_for_export(model_dir)
    names = input_names(model, tokenizer)
    tmp = _prepare_output(output_dir, model_dir, overwrite)
    try:
        start = time.perf_counter()
        export_onnx(model, head, names, os.path.join(tmp, ONNX_FILE), max_length(model.config))
        check = compare(model, head, OrtModel(os.path.join(tmp, ONNX_FILE)),
                        example_inputs(names, model.config.vocab_size, batch=3, length=24, seed=1))
        if check > CHECK_TOLERANCE:
            raise ExportError(f"the exported graph differs from the PyTorch model by {check:.2e} "
                              f"(> {CHECK_TOLERANCE}); not written")
        if quantize == "int8":
            quantize_int8(os.path.join(tmp, ONNX_FILE), os.path.join(tmp, INT8_FILE))
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)
        manifest = _manifest(model, head, names, model_dir, tmp, quantize, check, time.perf_counter() - start)
        with open(os.path.join(tmp, EXPORT_FILE), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _manifest(model: nn.Module, head: str, names: list[str], model_dir: str, directory: str, quantize: str | None,
              check: float, seconds: float) -> dict:
    """export.json: what a server needs to know, and where the graph came from."""
    from distill.evaluation.evaluate import trained_settings

    c = model.config
    mask = read_mask(model_dir)
    regression = head == "classification" and (c.problem_type == "regression" or c.num_labels == 1)
    files = {"fp32": ONNX_FILE} | ({"int8": INT8_FILE} if quantize else {})
    return {"format": EXPORT_FORMAT, "format_version": 1,
            "task": "qa" if head == "qa" else "regression" if regression else "classification",
            "model_type": c.model_type, "inputs": names, "outputs": list(OUTPUTS[head]), "files": files,
            "file_mb": {k: round(os.path.getsize(os.path.join(directory, f)) / 2**20, 2) for k, f in files.items()},
            "labels": None if head == "qa" or regression else [c.id2label[i] for i in range(c.num_labels)],
            "max_length": max_length(c), "trained": trained_settings(model_dir) or None,
            "parameters": count_parameters(model),
            "pruned": None if mask is None else {"heads_per_layer": mask.heads.sum(1).tolist(),
                                                 "ffn_per_layer": mask.ffn.sum(1).tolist()},
            "check": {"max_abs_diff_fp32": check, "tolerance": CHECK_TOLERANCE},
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}", "opset": OPSET,
            "session": {"disabled_optimizers": list(DISABLED_OPTIMIZERS)},
            "seconds": round(seconds, 1)}
