#!/usr/bin/env bash
# Docker smoke test: builds the image, then runs in it (as its non-root user, no network,
# HF_HUB_OFFLINE=1, assets mounted read-only) `augment candidates`, `augment text` and the same text
# through `augment serve` (a detached container on a published loopback port, bearer token; one
# request from the host must equal `augment text`'s output), a 40-sentence SST-2 corpus with
# `python pipelines/augment.py`, and, from that corpus mounted read-only, a 4-step teacher fine-tune
# and a 4-step `distill task --step prediction`; then loads the student on the host with plain
# transformers and checks its logits equal the container's. Prints the image size and each step's
# time; exits non-zero on any failure.
# Takes minutes (the build downloads ~1 GB), so it is not part of .ci/run.
#
#   scripts/docker_smoke.sh                        # base python:3.11-slim, torch from the CPU index
#   scripts/docker_smoke.sh --debian-base --torch-wheels /opt/wheels   # no registry, local torch wheel
#
# Options:
#   --base IMAGE          base image (default python:3.11-slim; pulled when not present)
#   --debian-base         base bert-compress-base:bookworm, built by scripts/debian_base.sh if absent
#   --torch-wheels DIR    install torch from the wheels in DIR, served on 127.0.0.1 during the build
#   --torch-index URL     torch's package index (default: the Dockerfile's, the CPU index)
#   --pip-cert FILE       the CA bundle pip trusts during the build (default: the host pip's `cert`
#                         setting, PIP_CERT or global.cert, when there is one)
#   --image TAG           the image to build (default bert-compress:smoke)
#   --out DIR             keep the outputs in DIR (default: a temporary folder, removed at the end)
# Environment: BERT_COMPRESS_ASSETS (default ../shared/assets), PYTHON (the host Python with
# torch and transformers; default python3).
# Starts dockerd in the background when it is installed but not running (needs root).
set -Eeuo pipefail
cd "$(dirname "$0")/.."

die() { echo "docker_smoke.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

base=python:3.11-slim
debian_base=""
torch_wheels=""
torch_index=""
pip_cert=""
image=bert-compress:smoke
keep_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) base="${2:?--base needs an image}"; shift 2 ;;
    --debian-base) base=bert-compress-base:bookworm; debian_base=1; shift ;;
    --torch-wheels) torch_wheels="${2:?--torch-wheels needs a folder}"; shift 2 ;;
    --torch-index) torch_index="${2:?--torch-index needs a URL}"; shift 2 ;;
    --pip-cert) pip_cert="${2:?--pip-cert needs a file}"; shift 2 ;;
    --image) image="${2:?--image needs a tag}"; shift 2 ;;
    --out) keep_dir="${2:?--out needs a folder}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

# -- the engine ----------------------------------------------------------------------------------
command -v docker >/dev/null \
  || die "Docker is not installed (no 'docker' command). Install it (Debian: apt-get install docker.io) and run again."
if ! docker info >/dev/null 2>&1; then
  command -v dockerd >/dev/null \
    || die "the Docker engine is not reachable and 'dockerd' is not installed here; start Docker and run again"
  [ "$(id -u)" = 0 ] \
    || die "the Docker engine is not running; starting it needs root (sudo dockerd &, or systemctl start docker)"
  dockerd_log=/var/tmp/docker_smoke-dockerd.log
  echo "starting dockerd (log: $dockerd_log)"
  # Its own session, so it outlives this script and is not killed with the script's process group.
  setsid dockerd >"$dockerd_log" 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  if ! docker info >/dev/null 2>&1; then
    tail -20 "$dockerd_log" >&2
    die "dockerd did not come up in 60 s (log: $dockerd_log)"
  fi
fi

assets="${BERT_COMPRESS_ASSETS:-$(cd .. && pwd)/shared/assets}"
python="${PYTHON:-python3}"
teacher_rel=models/minilm-l6-mlm
glove_rel=glove/glove.6B.50d.top100k.txt
for f in "$teacher_rel/config.json" "$glove_rel" glue/SST-2/train.tsv glue/SST-2/dev.tsv; do
  [ -e "$assets/$f" ] || die "asset $assets/$f is missing; set BERT_COMPRESS_ASSETS"
done
assets="$(cd "$assets" && pwd)"
"$python" -c "import torch, transformers" 2>/dev/null \
  || die "the host Python ($python) cannot import torch and transformers; set PYTHON"
# The CA bundle this machine's pip trusts (an HTTPS-intercepting proxy needs it inside the build too).
[ -n "$pip_cert" ] || pip_cert="${PIP_CERT:-$("$python" -m pip config get global.cert 2>/dev/null || true)}"

# -- bookkeeping ---------------------------------------------------------------------------------
if [ -n "$keep_dir" ]; then
  mkdir -p "$keep_dir"; work="$(cd "$keep_dir" && pwd)"
  [ -z "$(ls -A "$work")" ] || die "--out $work is not empty"
else
  work="$(mktemp -d /var/tmp/docker_smoke.XXXXXX)"
fi
mkdir -p "$work/out" "$work/cache" "$work/logs"
server_pid=""
service_name=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  if [ -n "$service_name" ]; then docker rm -f "$service_name" >/dev/null 2>&1 || true; fi
  [ -n "$keep_dir" ] || rm -rf "$work"
}
trap cleanup EXIT

step_names=()
step_secs=()
current=""
log_file() { echo "$work/logs/${1//[^A-Za-z0-9]/_}.log"; }
log_of() { cat "$(log_file "$1")"; }
on_error() {
  echo "docker_smoke.sh: FAILED in step '$current'" >&2
  if [ -n "$current" ] && [ -s "$(log_file "$current")" ]; then
    echo "--- the last lines of its output:" >&2
    tail -40 "$(log_file "$current")" >&2
  fi
}
trap on_error ERR

# step NAME CMD...: runs CMD with its output in a log file, prints and records its wall time.
step() {
  current="$1"; shift
  local t0 t1 secs
  echo "== $current"
  t0=$(date +%s.%N)
  "$@" >"$(log_file "$current")" 2>&1
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  step_names+=("$current"); step_secs+=("$secs")
  echo "   ${secs} s"
}

# -- base image and build ------------------------------------------------------------------------
if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ -n "$debian_base" ]; then
    step "debian base (debootstrap)" scripts/debian_base.sh "$base"
  else
    docker pull -q "$base" >/dev/null \
      || die "cannot get the base image $base (no registry access?); --debian-base builds one from Debian's packages"
  fi
fi

build_args=(--build-arg "BASE=$base")
[ -z "$torch_index" ] || build_args+=(--build-arg "TORCH_INDEX=$torch_index")
# The torch wheels and pip's CA bundle reach the build over loopback: a folder of links to them,
# served while the image builds.
if [ -n "$torch_wheels" ] || [ -n "$pip_cert" ]; then
  mkdir "$work/serve"
  if [ -n "$torch_wheels" ]; then
    compgen -G "$torch_wheels/torch-*.whl" >/dev/null || die "no torch-*.whl in $torch_wheels"
    ln -s "$(cd "$torch_wheels" && pwd)"/torch-*.whl "$work/serve/"
  fi
  if [ -n "$pip_cert" ]; then
    [ -f "$pip_cert" ] || die "pip's CA bundle $pip_cert is not a file"
    ln -s "$(realpath "$pip_cert")" "$work/serve/pip-ca.pem"
  fi
  # The first free port from a fixed range: the URLs are build arguments, so a port that stays the
  # same from run to run keeps Docker's layer cache valid.
  port=$("$python" - <<'EOF'
import socket
for port in range(47600, 47700):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("no free port in 47600-47699 for the file server")
EOF
)
  "$python" -m http.server --bind 127.0.0.1 --directory "$work/serve" "$port" >"$work/logs/file-server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/')" 2>/dev/null && break
    sleep 0.2
  done
  [ -z "$torch_wheels" ] || build_args+=(--build-arg "TORCH_FIND_LINKS=http://127.0.0.1:$port/")
  [ -z "$pip_cert" ] || build_args+=(--build-arg "PIP_CA_URL=http://127.0.0.1:$port/pip-ca.pem")
fi

# --network host: the build reaches the package indexes as this machine does, and the loopback
# file server.
step "build image" nice -n 10 docker build --network host -t "$image" "${build_args[@]}" .
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "   image $image (base $base): $(awk -v s="$size" 'BEGIN { printf "%.2f GB (%d bytes)", s / 1e9, s }')"

# -- jobs in the container -----------------------------------------------------------------------
# The augmentation service's bearer token, readable by the container's user only.
(umask 077 && "$python" -c 'import secrets; print(secrets.token_hex(16))' >"$work/token")
# Outputs must be writable by the container's user: the invoking user's uid (outputs stay theirs),
# or, when that is root, the image's own non-root user.
if [ "$(id -u)" = 0 ]; then
  user_args=()
  chown "$(docker run --rm "$image" id -u)" "$work/out" "$work/cache" "$work/token"
else
  user_args=(--user "$(id -u):$(id -g)")
fi
# in_container CMD...: CMD in a fresh container with no network; mounts beyond the common ones
# come from the array `mounts`.
mounts=()
in_container() {
  docker run --rm --network none -e HF_HUB_OFFLINE=1 \
    -v "$assets:/assets:ro" -v "$work/out:/out" -v "$work/cache:/cache" ${mounts[@]+"${mounts[@]}"} \
    ${user_args[@]+"${user_args[@]}"} "$image" "$@"
}
teacher=/assets/$teacher_rel
glove=/assets/$glove_rel
sentence="a gripping , funny and heartfelt film"

step "container check" in_container python -c '
import json, os, torch, transformers
from huggingface_hub import constants
try:
    open("/assets/.write-test", "w")
    assets_read_only = False
except OSError:
    assets_read_only = True
facts = {"uid": os.getuid(), "python": os.sys.version.split()[0], "torch": torch.__version__,
         "cuda": torch.version.cuda, "transformers": transformers.__version__,
         "HF_HUB_OFFLINE": constants.HF_HUB_OFFLINE, "assets_read_only": assets_read_only}
print(json.dumps(facts))
assert facts["uid"] != 0, "the container runs as root"
assert facts["cuda"] is None, "a CUDA build of torch is in the CPU image"
assert facts["HF_HUB_OFFLINE"], "HF_HUB_OFFLINE=1 is not seen by huggingface_hub"
assert assets_read_only, "/assets is writable"
'
echo "   $(log_of "container check" | tail -1)"

step "augment candidates" in_container augment candidates --teacher "$teacher" --glove "$glove" \
  --text "$sentence" --k 5
echo "   $(log_of "augment candidates" | grep '^{' | tail -1)"

step "augment text" in_container augment text --teacher "$teacher" --glove "$glove" \
  --text "$sentence" --n-aug 4 --seed 7
echo "   $(log_of "augment text" | grep '^{' | tail -1)"

# augment serve in a detached container: it must bind 0.0.0.0 to be published, so it needs the token;
# published on the host's loopback only. (A published port needs a network: Docker's default bridge.)
service_name="bert-compress-smoke-serve-$$"
service_port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
serve_check() {
  docker run -d --name "$service_name" -p "127.0.0.1:$service_port:8080" -e HF_HUB_OFFLINE=1 \
    -v "$assets:/assets:ro" -v "$work/cache:/cache" -v "$work/token:/run/secrets/augment-token:ro" \
    ${user_args[@]+"${user_args[@]}"} "$image" augment serve --host 0.0.0.0 \
    --token-file /run/secrets/augment-token --teacher "$teacher" --glove "$glove"
  if ! "$python" - "http://127.0.0.1:$service_port" "$work/token" "$sentence" \
      "$(log_of "augment text" | grep '^{' | tail -1)" <<'EOF'
import json, sys, time, urllib.request
url, token_file, sentence, expected = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
for _ in range(240):
    try:
        if opener.open(url + "/healthz", timeout=5).status == 200:
            break
    except OSError:
        time.sleep(0.5)
else:
    raise SystemExit("the service did not answer /healthz within 2 minutes")
with open(token_file) as f:
    token = f.read().strip()
body = json.dumps({"texts": [sentence], "n_aug": 4, "seed": 7}).encode()
request = urllib.request.Request(url + "/v1/augment", data=body, headers={
    "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
answer = json.loads(opener.open(request, timeout=120).read())
print(json.dumps(answer, ensure_ascii=False))
assert answer["results"] == [expected], f"the service answered {answer}, augment text wrote {expected}"
EOF
  then
    docker logs "$service_name" 2>&1 | tail -20
    return 1
  fi
  docker rm -f "$service_name" >/dev/null
}
step "augment serve (one request)" serve_check
echo "   $(log_of "augment serve (one request)" | grep '^{' | tail -1)"

step "corpus (pipelines/augment.py)" in_container python pipelines/augment.py --task sst2 \
  --input /assets/glue/SST-2/train.tsv --output /out/corpus --teacher "$teacher" --glove "$glove" \
  --n-aug 2 --max-records 40
echo "   $(log_of "corpus (pipelines/augment.py)" | grep -o 'corpus [0-9a-f]\{16\} .*' | tail -1)"

# Distillation reads the corpus from a read-only mount, as users mount theirs.
mounts=(-v "$work/out/corpus:/corpus:ro")
step "teacher (distill finetune)" in_container distill finetune --config configs/sst2-cpu/teacher.yaml \
  model.teacher="$teacher" data.train=/corpus train.max_steps=4 train.batch_size=8 \
  train.progress=false output_dir=/out/teacher
echo "   $(tail -1 "$work/out/teacher/log.jsonl")"

step "distill task --step prediction" in_container distill task --step prediction \
  --config configs/sst2-cpu/prediction.yaml model.teacher=/out/teacher/final model.student=tinybert-4 \
  data.train=/corpus data.dev=/assets/glue/SST-2/dev.tsv train.max_steps=4 train.batch_size=8 \
  train.eval_every=4 train.progress=false output_dir=/out/pred
echo "   $(log_of "distill task --step prediction" | grep '^{' | tail -1)"

predict='
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, sentence = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSequenceClassification.from_pretrained(path).eval()
with torch.inference_mode():
    logits = model(**tok(sentence, return_tensors="pt")).logits[0]
print(json.dumps({"logits": logits.tolist(), "label": model.config.id2label[int(logits.argmax())],
                  "layers": model.config.num_hidden_layers, "parameters": sum(p.numel() for p in model.parameters())}))
'
step "predict in container" in_container python -c "$predict" /out/pred/best "$sentence"
echo "   $(log_of "predict in container" | grep '^{' | tail -1)"

# -- on the host ---------------------------------------------------------------------------------
step "load on host (transformers)" env HF_HUB_OFFLINE=1 "$python" -c "$predict" "$work/out/pred/best" "$sentence"
echo "   $(log_of "load on host (transformers)" | grep '^{' | tail -1)"
current="host = container"
"$python" - "$(log_of "predict in container" | grep '^{' | tail -1)" \
  "$(log_of "load on host (transformers)" | grep '^{' | tail -1)" <<'EOF'
import json, sys
inside, host = (json.loads(a) for a in sys.argv[1:3])
diff = max(abs(a - b) for a, b in zip(inside["logits"], host["logits"]))
print(f"== host = container: label {host['label']!r} both, largest logit difference {diff:.2e}")
assert inside["label"] == host["label"] and diff < 1e-4, "the host's logits differ from the container's"
EOF

current=""
echo
gb=$(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }')
echo "docker smoke passed on $(date -u +%F), $(uname -m), $(nproc) cores: image $image, base $base, $gb"
for i in "${!step_names[@]}"; do
  printf '  %-34s %8s s\n' "${step_names[$i]}" "${step_secs[$i]}"
done
[ -z "$keep_dir" ] || echo "outputs kept in $work/out"
