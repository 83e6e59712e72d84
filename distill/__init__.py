"""Task-specific distillation and pruning of BERT-family models: TinyBERT's two-stage distillation
(Jiao et al., 2020) and structured pruning for QA (McCarley et al., 2019) over streamed Arrow shards.

Subpackages, from the ground up (each imports only from those listed before it, never back):

- ``distill.config``, ``distill.devices``, ``distill.progress``: a training stage's configuration (the
  ``distill`` YAML sections), where and in what precision it computes, progress a person can see.
- ``distill.data``: corpus files (manifest + Arrow shards), the streaming dataset and collators, GLUE
  rows, SQuAD rows and windows.
- ``distill.modules``: models and students, distillation losses, the layer mapping, pruning gates,
  masks and compaction, and the per-stage objectives (the ``nn.Module`` a Trainer optimises).
- ``distill.evaluation``: ``evaluate`` (one, for every task), SQuAD span decoding and scoring,
  GLUE metrics, size and latency measures.
- ``distill.training``: the ``Trainer`` (checkpoints, RNG state, resume, DDP), the L0 pruning
  trainer and the prune command's mechanism, the teacher cache.
- ``distill.run``: recipes (the YAML a user runs) parsed and checked, the plan of a recipe's stages
  with fingerprints, running it, and the report.
- ``distill.export`` (ONNX) and ``distill.cli`` (the ``distill`` command) on top.
- ``distill/recipes/``: the shipped recipes, YAML only.

Words: a *recipe* is a YAML file a user runs; a recipe has *stages*; a training stage runs a
*Trainer* over an *objective*; an optimiser takes *steps*. Architecture: docs/architecture.md.
"""
__version__ = "0.1.0"
