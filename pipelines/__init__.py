"""Beam pipelines around the augmentation engine: the augmented-corpus builder (``pipelines/augment.py``).

Reuse a built corpus with :func:`pipelines.manifest.load_corpus` (or ``datasets.Dataset.from_file``
on its shards); see docs/pipeline.md.
"""
