"""TinyBERT two-stage distillation (Jiao et al., 2020) over streamed Arrow shards.

- ``distill.losses``: embedding / hidden / attention-score MSE, soft cross-entropy (pure functions).
- ``distill.mapping``: which teacher layer each student layer learns from (data, validated).
- ``distill.models``: teachers, TinyBERT-4/6 students, pre-softmax attention scores.
- ``distill.data``: the streaming dataset over shards and the dynamic-padding collator.
- ``distill.train``: the recipe shared by ``finetune``, ``general`` and ``task`` (``distill.cli``).
"""
__version__ = "0.1.0"
