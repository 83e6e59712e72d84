"""Building blocks: models and TinyBERT students (``models``), distillation losses (``losses``),
the layer mapping (``mapping``), pruning gates, masks and compaction (``pruning``), and the
per-stage objectives a Trainer optimises (``objectives``)."""
