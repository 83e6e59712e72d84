"""Training data: corpus files (manifest + Arrow shards: ``shards``), the streaming dataset and
collators (``stream``), tokenisation of data text (``encoding``), GLUE rows (``glue``), SQuAD rows and
windows (``qa``). Imports only ``distill.config`` from above it."""
