# bert-compress: augmentation, corpus building, distillation and pruning jobs.
#
# CPU (default, python:3.11-slim, torch 2.13.0 from the CPU wheel index):
#   docker build -t bert-compress .
# A plain Debian base (no python:3.11-slim available: scripts/debian_base.sh builds one from
# Debian's packages) and torch from a folder of wheels served on loopback:
#   docker build --network host -t bert-compress --build-arg BASE=bert-compress-base:bookworm \
#     --build-arg TORCH_FIND_LINKS=http://127.0.0.1:8000/ .
# CUDA (not built by this project's CI or smoke test):
#   docker build -t bert-compress:cuda \
#     --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# Run as the image's non-root user; inputs read-only, outputs to a mounted /out:
#   docker run --rm -e HF_HUB_OFFLINE=1 -v $PWD/assets:/assets:ro -v $PWD/out:/out bert-compress \
#     distill task --step prediction --config configs/sst2-cpu/prediction.yaml \
#       model.teacher=/out/teacher/best model.student=/out/int/final data.train=/out/corpus output_dir=/out/pred
# The augmentation service (docs/service.md): a published port needs a non-loopback bind, hence a token:
#   docker run --rm -p 127.0.0.1:8080:8080 -e HF_HUB_OFFLINE=1 -v $PWD/assets:/assets:ro \
#     -v $PWD/token:/run/secrets/augment-token:ro bert-compress augment serve --host 0.0.0.0 \
#       --token-file /run/secrets/augment-token --teacher /assets/models/minilm-l6-mlm \
#       --glove /assets/glove/glove.6B.50d.top100k.txt
# scripts/docker_smoke.sh builds the image and runs a short job of every kind in it.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
# Where torch comes from. The CPU index keeps pip from resolving torch to a multi-GB CUDA build;
# CUDA images pass their index. TORCH_FIND_LINKS (a folder URL of wheels, e.g. served on
# loopback), when set, is used instead: torch is installed from it alone, its dependencies from
# the ordinary index.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
# Behind an HTTPS-intercepting proxy: PIP_CA_URL names the CA bundle (over http, e.g. served on
# loopback) that pip trusts during the build. Each pip step fetches it and deletes it again, so it
# is in no layer of the image.
ARG PIP_CA_URL=
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 TOKENIZERS_PARALLELISM=false

# python:3.11-slim can make virtual environments; plain Debian/Ubuntu and CUDA bases have no Python,
# or one without venv/ensurepip (Debian splits them out): install the distribution's. Everything then goes
# into /opt/venv, the same steps on every base (Debian's system Python refuses pip, PEP 668).
RUN if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    fi \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first and pinned, as the README installs it; its own layer, so editing the project does
# not download it again.
RUN if [ -n "$PIP_CA_URL" ]; then export PIP_CERT=/tmp/pip-ca.pem \
      && python3 -c 'import sys, urllib.request as r; r.urlretrieve(*sys.argv[1:])' "$PIP_CA_URL" "$PIP_CERT"; fi \
 && if [ -n "$TORCH_FIND_LINKS" ]; then \
      pip install --no-index --no-deps --find-links "$TORCH_FIND_LINKS" "torch==$TORCH_VERSION"; \
    else \
      pip install --index-url "$TORCH_INDEX" "torch==$TORCH_VERSION"; \
    fi \
 && rm -f /tmp/pip-ca.pem

WORKDIR /opt/bert-compress
COPY . .
# torch stays pinned on this line too, so the resolver cannot replace it (with find-links it also
# fills in torch's dependencies). The onnx extra lets the image run `distill export` (and int8).
# The in-tree build leftovers go.
RUN if [ -n "$PIP_CA_URL" ]; then export PIP_CERT=/tmp/pip-ca.pem \
      && python3 -c 'import sys, urllib.request as r; r.urlretrieve(*sys.argv[1:])' "$PIP_CA_URL" "$PIP_CERT"; fi \
 && pip install "torch==$TORCH_VERSION" ".[tensorboard,onnx,serve]" \
 && pip check \
 && rm -rf build *.egg-info /tmp/pip-ca.pem

# A non-root user. /out (outputs) and /cache (the GloVe binary copies, Hub downloads: mount a
# volume to keep them between runs) are writable by it and by any --user uid.
RUN useradd --create-home --uid 1000 --shell /bin/bash bc \
 && mkdir -p /out /cache \
 && chown bc:bc /out \
 && chmod 1777 /out /cache
ENV XDG_CACHE_HOME=/cache
USER bc
# `augment serve`'s default port.
EXPOSE 8080
# The source tree stays the working directory: `python pipelines/augment.py` and
# `--config configs/...` work as in the README; give outputs absolute paths under /out.
CMD ["distill", "--help"]
