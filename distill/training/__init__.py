"""Training: the ``Trainer`` shared by every training stage (``trainer``: checkpoints, RNG state,
resume, DDP), the L0 pruning trainer and ``distill prune`` (``prune``), the teacher cache
(``teacher_cache``)."""
