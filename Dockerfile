# bert-compress: augmentation, distillation and pruning jobs.
#
# CPU (default):  docker build -t bert-compress .
# CUDA:           docker build -t bert-compress:cuda \
#                   --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# Run (shards mounted as a volume):
#   docker run --rm -v $PWD/corpora:/data -v $PWD/out:/out bert-compress \
#     distill task --step prediction --config /data/sst2-task.yaml output_dir=/out/sst2-pred
ARG BASE=python:3.11-slim
FROM ${BASE}

# The CPU wheel index keeps pip from fetching a multi-GB CUDA build; CUDA images pass their index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TOKENIZERS_PARALLELISM=false

# CUDA base images have no Python: install it (a no-op on the python image).
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /opt/bert-compress
COPY . .
# The README's install steps: torch pinned first, then the project.
RUN pip install torch==2.13.0 --index-url ${TORCH_INDEX} \
 && pip install ".[tensorboard]"

VOLUME ["/data", "/out"]
WORKDIR /out
CMD ["distill", "--help"]
