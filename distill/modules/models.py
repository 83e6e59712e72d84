"""Teachers, students and the features TinyBERT distils (Jiao et al., 2020, Sec. 3.1 and 4.2).

Any BERT-family encoder (BERT, RoBERTa, ELECTRA layout: ``encoder.layer[i].attention.self.query``)
can be teacher or student. Students come from a preset (TinyBERT-4, TinyBERT-6), a config file, or
a checkpoint directory. Models are loaded with ``from_pretrained`` (safetensors preferred, never
remote code) and saved with ``save_pretrained`` (safetensors), so outputs load with plain
``transformers``.

Pre-softmax attention scores are not returned by transformers (``output_attentions`` gives
probabilities, and only in eager mode), so ``features`` recomputes ``Q K^T / sqrt(d)`` from each
mapped layer's own query/key projections applied to that layer's input (``hidden_states[l - 1]``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

#: TinyBERT students (paper, Sec. 4.2): layers, hidden, FFN and heads; the rest follows the teacher.
PRESETS: dict[str, dict] = {
    "tinybert-4": dict(num_hidden_layers=4, hidden_size=312, intermediate_size=1200, num_attention_heads=12),
    "tinybert-6": dict(num_hidden_layers=6, hidden_size=768, intermediate_size=3072, num_attention_heads=12),
}
#: What a model is built for: the bare encoder (general distillation) or a task head.
HEADS = ("base", "classification", "qa")
#: Config fields a student copies from its teacher so both read the same token ids.
_SHARED_FIELDS = ("vocab_size", "max_position_embeddings", "type_vocab_size", "pad_token_id", "layer_norm_eps")


class ModelError(ValueError):
    """A model that cannot serve in the requested role."""


def _auto_class(head: str):
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    if head not in HEADS:
        raise ModelError(f"head must be one of {HEADS}, got {head!r}")
    return {"base": AutoModel, "classification": AutoModelForSequenceClassification,
            "qa": AutoModelForQuestionAnswering}[head]


def _head_kwargs(head: str, num_labels: int | None, regression: bool) -> dict:
    if head != "classification":
        return {}
    if num_labels is None:
        return {}  # keep the checkpoint's own head
    return {"num_labels": num_labels, "problem_type": "regression" if regression else "single_label_classification"}


def load_model(path: str, head: str = "base", num_labels: int | None = None, regression: bool = False) -> nn.Module:
    """A pretrained model from a hub name or directory, with the requested head (new heads are
    initialised randomly, as transformers does). Raises ``ModelError`` for non-BERT-family layouts."""
    cls = _auto_class(head)
    try:
        model = cls.from_pretrained(path, trust_remote_code=False, **_head_kwargs(head, num_labels, regression))
    except OSError as e:  # not found locally nor on the Hub (or offline)
        raise ModelError(f"cannot load model {path!r}: {e}") from None
    check_layout(model)
    return model


def load_architecture(path: str, head: str = "base") -> nn.Module:
    """A model's architecture on the meta device, from its config alone: no weights are read and no
    memory is taken, yet its head, vocabulary and widths can be checked as a loaded model's would.
    (A teacher whose outputs come from ``data.teacher_cache``.) Raises ``ModelError`` as ``load_model``."""
    from transformers import AutoConfig

    cls = _auto_class(head)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    except OSError as e:
        raise ModelError(f"cannot load model {path!r}: {e}") from None
    with torch.device("meta"):
        model = cls.from_config(config)
    check_layout(model)
    return model


def student_config(spec: str, teacher_config, num_labels: int | None = None, regression: bool = False):
    """The config of a new student: a preset name, or a path to a config.json / model directory.

    Presets are ``BertConfig`` sharing the teacher's vocabulary, positions and token types.
    """
    from transformers import AutoConfig, BertConfig

    kwargs = {} if num_labels is None else {"num_labels": num_labels,
                                            "problem_type": "regression" if regression else "single_label_classification"}
    if spec in PRESETS:
        shared = {k: getattr(teacher_config, k) for k in _SHARED_FIELDS if hasattr(teacher_config, k)}
        return BertConfig(**shared, **PRESETS[spec], **kwargs)
    if os.path.isfile(spec) or os.path.isdir(spec):
        return AutoConfig.from_pretrained(spec, trust_remote_code=False, **kwargs)
    raise ModelError(f"unknown student {spec!r}: use a preset ({', '.join(PRESETS)}), a config.json or a model directory")


def build_student(spec: str, teacher_config, head: str = "base", num_labels: int | None = None,
                  regression: bool = False) -> nn.Module:
    """A student: freshly initialised from a preset or a config.json, else loaded from a checkpoint
    directory or hub name (a directory with only a config.json is initialised from it)."""
    weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
    fresh = spec in PRESETS or os.path.isfile(spec) or (
        os.path.isdir(spec) and not any(os.path.exists(os.path.join(spec, w)) for w in weights))
    if not fresh:
        try:
            return load_model(spec, head, num_labels, regression)
        except ModelError as e:
            raise ModelError(f"unknown student {spec!r}: not a preset ({', '.join(PRESETS)}), a config.json, a "
                             f"model directory, or a loadable hub model ({e})") from None
    model = _auto_class(head).from_config(student_config(spec, teacher_config, num_labels, regression))
    check_layout(model)
    return model


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-family model, with or without a task head."""
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        raise ModelError(f"{type(model).__name__} has no base_model.encoder.layer; only BERT-family encoders "
                         f"(BERT, RoBERTa, ELECTRA layouts) can be distilled") from None


def check_layout(model: nn.Module) -> None:
    """Raise ``ModelError`` unless the features below can be computed for ``model``."""
    layers = encoder_layers(model)
    att = getattr(getattr(layers[0], "attention", None), "self", None)
    if att is None or not all(hasattr(att, a) for a in ("query", "key", "attention_head_size")):
        raise ModelError(f"{type(model).__name__}: layers lack attention.self.query/key; not a BERT-family encoder")
    pos = getattr(model.config, "position_embedding_type", "absolute")
    if pos != "absolute":
        raise ModelError(f"position_embedding_type {pos!r} adds terms to the attention scores; only 'absolute' is supported")


def attention_scores(layer: nn.Module, layer_input: torch.Tensor) -> torch.Tensor:
    """Pre-softmax scores ``Q K^T / sqrt(d)`` of one layer, without the padding mask.

    Args:
        layer: an encoder layer; layer_input: (B, T, H), the hidden states entering it.
    Returns:
        (B, nh, T, T)
    """
    att = layer.attention.self
    b, t, _ = layer_input.shape
    hs = att.attention_head_size
    q = att.query(layer_input).view(b, t, -1, hs).transpose(1, 2)  # (B, nh, T, hs)
    k = att.key(layer_input).view(b, t, -1, hs).transpose(1, 2)  # (B, nh, T, hs)
    return q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, T, T)


@dataclass
class Features:
    """What one forward returns for distillation.

    hidden: L + 1 tensors (B, T, H); ``hidden[0]`` is the embedding output, ``hidden[l]`` layer l's.
    scores: layer l (1-indexed) -> (B, nh, T, T) pre-softmax scores, for the layers asked for.
    logits: (B, C) when the model has a head, else None.
    """

    hidden: tuple[torch.Tensor, ...]
    scores: dict[int, torch.Tensor] = field(default_factory=dict)
    logits: torch.Tensor | None = None


def features(model: nn.Module, batch: dict, score_layers=(), need_hidden: bool = True) -> Features:
    """Run ``model`` on ``batch`` (input_ids, attention_mask, token_type_ids) and collect features.

    Args:
        score_layers: 1-indexed layers whose pre-softmax attention scores are recomputed.
        need_hidden: ask for hidden states (needed for any score layer too).
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    out = model(**inputs, output_hidden_states=need_hidden or bool(score_layers), return_dict=True)
    hidden = tuple(out.hidden_states) if out.hidden_states is not None else ()
    layers = encoder_layers(model) if score_layers else None
    scores = {l: attention_scores(layers[l - 1], hidden[l - 1]) for l in score_layers}
    return Features(hidden=hidden, scores=scores, logits=getattr(out, "logits", None))


class Projector(nn.Module):
    """The learned map from student width to teacher width (the authors' ``fit_dense``), shared by
    the embedding and every hidden-state term. (B, T, H_s) -> (B, T, H_t)."""

    def __init__(self, student_hidden: int, teacher_hidden: int):
        super().__init__()
        if student_hidden < 1 or teacher_hidden < 1:
            raise ValueError(f"widths must be >= 1, got {student_hidden} -> {teacher_hidden}")
        self.proj = nn.Linear(student_hidden, teacher_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
