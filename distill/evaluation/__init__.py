"""Evaluation in one place: ``evaluate`` (a model on rows, every task; ``distill eval``), SQuAD span
decoding and scoring (``squad``), GLUE and SQuAD metrics as pure functions (``metrics``), size and
latency (``measure``)."""
