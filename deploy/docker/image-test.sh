#!/usr/bin/env bash
# make image-test: builds the Dockerfile with Debian's buildah (no Docker
# engine needed), runs the server from the image, has the real Python client
# compress a model through it from outside the container, and checks that the
# runtime image runs as non-root, passes its own HEALTHCHECK, holds no
# compiler and links every library. Prints the image size and the build time.
#
# Needs root (buildah with chroot isolation and vfs storage) and Debian's
# package mirror; base images are made with debootstrap when none can be
# pulled (deploy/docker/make-base-images.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
IMAGE="${BONSAI_IMAGE:-localhost/bonsai:test}"
PYTHON="${PYTHON:-/usr/bin/python3}"

# Only this target needs them, so they are not in deploy/install-deps.sh.
if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends buildah debootstrap
fi

deploy/docker/make-base-images.sh

start=$(date +%s)
buildah bud --pull=never --layers --format docker --isolation chroot \
  --build-arg BONSAI_REVISION="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
  -f Dockerfile -t "$IMAGE" . 2>&1 | sed 's/^/  build: /' | tail -n 25
build_seconds=$(( $(date +%s) - start ))

ctr=""
server_pid=""
runner_pid=""
log="$(mktemp /tmp/bonsai-image-test.XXXXXX.log)"
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  [[ -n "$runner_pid" ]] && { sleep 1; kill "$runner_pid" 2>/dev/null || true; wait "$runner_pid" 2>/dev/null || true; }
  [[ -n "$ctr" ]] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -f "$log"
}
trap cleanup EXIT

fail() { echo "image-test: FAIL: $*"; [[ -s "$log" ]] && { echo "--- server log"; tail -n 30 "$log"; }; exit 1; }

# ---- static checks on the image
user="$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$IMAGE")"
[[ "$user" =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || fail "USER is '$user', not a numeric non-root uid"
health="$(buildah inspect --type image --format '{{.Docker.Config.Healthcheck}}' "$IMAGE")"
[[ "$health" == *bonsai-healthcheck* ]] || fail "no HEALTHCHECK in the image config ($health)"
ports="$(buildah inspect --type image --format '{{.Docker.Config.ExposedPorts}}' "$IMAGE")"
[[ "$ports" == *50051/tcp* && "$ports" == *9464/tcp* ]] || fail "EXPOSE lacks 50051 or 9464 ($ports)"

ctr="$(buildah from --pull=never "$IMAGE")"
in_image() { buildah run --isolation chroot "$ctr" -- "$@"; }

uid="$(in_image id -u)"
[[ "$uid" != 0 ]] || fail "processes in the image run as root"
in_image sh -c 'for tool in cc gcc g++ c++ clang cpp cmake make ld as; do
                  if command -v "$tool"; then exit 1; fi; done' \
  || fail "the runtime image holds a compiler or build tool"
compiler_pkgs="$(in_image dpkg-query -W -f '${Package}\n' | grep -E '^(gcc|g\+\+|cpp|clang|binutils|cmake|libc6-dev)(-[0-9.]+)?$' || true)"
[[ -z "$compiler_pkgs" ]] || fail "compiler packages installed: $compiler_pkgs"
missing="$(in_image ldd /usr/local/bin/bonsai-server | grep 'not found' || true)"
[[ -z "$missing" ]] || fail "unresolved libraries: $missing"

# ---- run the server from the image; chroot isolation shares the host's
# network, so loopback ports reach it from outside the container.
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port="$(free_port)"
metrics_port="$(free_port)"
buildah run --isolation chroot "$ctr" -- /usr/local/bin/bonsai-server \
  --listen="127.0.0.1:$port" --metrics_listen="127.0.0.1:$metrics_port" --workers=2 >"$log" 2>&1 &
runner_pid=$!

for _ in $(seq 1 120); do
  server_pid="$(pgrep -f -x -- "/usr/local/bin/bonsai-server --listen=127.0.0.1:$port .*" || true)"
  [[ -n "$server_pid" ]] && break
  kill -0 "$runner_pid" 2>/dev/null || fail "the server exited at start"
  sleep 0.5
done
[[ -n "$server_pid" ]] || fail "no server process after 60 s"
server_uid="$(awk '/^Uid:/ {print $2}' "/proc/$server_pid/status")"
[[ "$server_uid" == "${user%%:*}" ]] || fail "server runs as uid $server_uid, image USER is $user"

healthy=""
for _ in $(seq 1 60); do
  if in_image bonsai-healthcheck "127.0.0.1:$port" 2>/dev/null; then healthy=yes; break; fi
  sleep 1
done
[[ -n "$healthy" ]] || fail "the image's HEALTHCHECK never passed"

BONSAI_TARGET="127.0.0.1:$port" BONSAI_METRICS="127.0.0.1:$metrics_port" \
PYTHONPATH="$PWD/client/python:$PWD/tests/e2e" "$PYTHON" - <<'PY' || fail "the Python client could not compress through the image"
import os, urllib.request
import bonsai, models
model = models.to_safetensors(models.build_mlp())
with bonsai.Client(os.environ["BONSAI_TARGET"], timeout=120) as client:
    result = client.compress(model, method="magnitude", sparsity=0.5)
totals = result.report.totals
assert abs(totals.sparsity - 0.5) < 0.01, totals
metrics = urllib.request.urlopen(f"http://{os.environ['BONSAI_METRICS']}/metrics", timeout=5).read().decode()
assert 'bonsai_jobs_total{format="safetensors",method="magnitude",outcome="ok"} 1' in metrics
print(f"image-test: compressed a {len(model)}-byte model to sparsity {totals.sparsity:.3f} through the image")
PY

in_image bonsai --help >/dev/null || fail "the bonsai CLI does not start in the image"

size="$(buildah images --format '{{.Size}}' "$IMAGE" | head -n 1)"
echo "image-test: $IMAGE runs as uid $server_uid, healthy, no compiler; size $size; built in ${build_seconds}s"
echo "image-test: 1 passed, 0 failed"
