"""Which teacher layer each student layer learns from (TinyBERT's mapping function n = g(m)).

A mapping is data, one entry per matched feature, TextBrewer style::

    {"student_layer": 2, "teacher_layer": 6, "feature": "hidden", "loss": "hidden_mse"}

Layers are 1-indexed transformer layers; layer 0 is the embedding output (``feature: embedding``).
``hidden`` compares layer outputs; ``attention`` compares the layer's pre-softmax attention scores.
TinyBERT's uniform strategy with M student and N teacher layers uses g(m) = m * N / M (floored when
N is not a multiple of M), so the last student layer always learns from the last teacher layer.
"""
from __future__ import annotations

from typing import Sequence

STRATEGIES = ("uniform", "top", "bottom")
FEATURES = {"embedding": "embedding_mse", "hidden": "hidden_mse", "attention": "attention_mse"}


class MappingError(ValueError):
    """A student/teacher pair that the requested mapping cannot connect."""


def teacher_layers(strategy: str | Sequence[int], n_student: int, n_teacher: int) -> list[int]:
    """Teacher layer g(m) for each student layer m = 1..n_student.

    Args:
        strategy: ``uniform``, ``top`` (the last M teacher layers), ``bottom`` (the first M), or an
            explicit list of M teacher layers (1-indexed).
    Raises:
        MappingError: unknown strategy, a student deeper than the teacher, a list of the wrong length
            or with layers outside 1..n_teacher.
    """
    if n_student < 1 or n_teacher < 1:
        raise MappingError(f"layer counts must be >= 1, got student {n_student}, teacher {n_teacher}")
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise MappingError(f"unknown layer mapping {strategy!r}; use one of {STRATEGIES} or a list of teacher layers")
        if n_student > n_teacher:
            raise MappingError(f"{strategy} mapping needs a student no deeper than the teacher "
                               f"(student {n_student} layers, teacher {n_teacher}); give an explicit list")
        if strategy == "uniform":
            return [m * n_teacher // n_student for m in range(1, n_student + 1)]
        if strategy == "top":
            return list(range(n_teacher - n_student + 1, n_teacher + 1))
        return list(range(1, n_student + 1))
    layers = [int(x) for x in strategy]
    if len(layers) != n_student:
        raise MappingError(f"layer list {layers} has {len(layers)} entries; the student has {n_student} layers")
    bad = [x for x in layers if not 1 <= x <= n_teacher]
    if bad:
        raise MappingError(f"teacher layers {bad} out of range 1..{n_teacher} in layer list {layers}")
    return layers


def build_mapping(strategy: str | Sequence[int], n_student: int, n_teacher: int,
                  features: Sequence[str] = ("embedding", "hidden", "attention")) -> list[dict]:
    """The mapping entries for ``features`` (embedding: 0 -> 0; hidden/attention: m -> g(m))."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise MappingError(f"unknown features {unknown}; known: {sorted(FEATURES)}")
    g = teacher_layers(strategy, n_student, n_teacher)
    entries = []
    if "embedding" in features:
        entries.append({"student_layer": 0, "teacher_layer": 0, "feature": "embedding", "loss": FEATURES["embedding"]})
    for feature in ("hidden", "attention"):
        if feature in features:
            entries += [{"student_layer": m, "teacher_layer": t, "feature": feature, "loss": FEATURES[feature]}
                        for m, t in enumerate(g, start=1)]
    return entries


def validate_mapping(entries: Sequence[dict], student_config, teacher_config) -> None:
    """Check that every entry can be computed for these two model configs.

    Raises:
        MappingError: a layer out of range, an embedding entry not on layer 0, or attention entries
            when the head counts or sequence limits differ (scores are compared head by head).
    """
    n_s, n_t = student_config.num_hidden_layers, teacher_config.num_hidden_layers
    for e in entries:
        s, t, feature = e["student_layer"], e["teacher_layer"], e["feature"]
        if feature not in FEATURES:
            raise MappingError(f"unknown feature {feature!r} in mapping entry {e}")
        low = 0 if feature != "attention" else 1
        if feature == "embedding" and (s, t) != (0, 0):
            raise MappingError(f"embedding entries map layer 0 to 0, got {e}")
        if not low <= s <= n_s:
            raise MappingError(f"student layer {s} out of range {low}..{n_s} in {e}")
        if not low <= t <= n_t:
            raise MappingError(f"teacher layer {t} out of range {low}..{n_t} in {e}")
    if any(e["feature"] == "attention" for e in entries):
        h_s, h_t = student_config.num_attention_heads, teacher_config.num_attention_heads
        if h_s != h_t:
            raise MappingError(f"attention distillation compares heads one to one: student has {h_s} heads, "
                               f"teacher {h_t}; use a student with {h_t} heads or set distill.attention_weight: 0")
    if student_config.vocab_size != teacher_config.vocab_size:
        raise MappingError(f"student vocabulary ({student_config.vocab_size}) differs from the teacher's "
                           f"({teacher_config.vocab_size}); both must read the same token ids")
