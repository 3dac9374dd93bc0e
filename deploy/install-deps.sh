#!/usr/bin/env bash
# Installs every Debian 12 package that bonsai's build, tests, benchmarks and
# Python client need. Idempotent: it only calls apt-get when something is
# missing, so `make run` / `make test` stay fast on a machine that has them.
# Used by the Makefile, .ci/run and the Dockerfile's build stage.
#
#   deploy/install-deps.sh            build + runtime + test + bench packages
#   deploy/install-deps.sh --build    only what compiling the server needs
set -euo pipefail

BUILD_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libre2-dev libssl-dev
  libopenblas-dev liblapacke-dev
  prometheus-cpp-dev libonnx-dev nlohmann-json3-dev libzstd-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
PYTHON_PACKAGES=(
  python3 python3-grpcio python3-protobuf python3-numpy python3-onnx
  python3-tqdm python3-pytest python3-torch python3-sklearn
  # the client reads YAML rules and llm-compressor recipes
  python3-yaml
)
TEST_PACKAGES=(
  zstd procps nodejs
  # metrics, dashboard and Helm chart proofs: a real Prometheus and promtool,
  # Go + sprig for the chart renderer, Kubernetes' API types, JSON Schema
  prometheus golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v2-dev
  python3-kubernetes python3-jsonschema
  # fuzzing (tests/fuzz): clang with libFuzzer and the sanitizer runtimes,
  # llvm-symbolizer for readable sanitizer stacks
  clang-14 libclang-rt-14-dev llvm-14
  # the HTML report is rendered in a real browser (headless)
  chromium
)
BENCH_PACKAGES=(
  # bench/lm_quality.py trains its language model on this text (2.8 MB)
  fortunes
)

wanted=("${BUILD_PACKAGES[@]}")
if [[ "${1:-}" != "--build" ]]; then
  wanted+=("${PYTHON_PACKAGES[@]}" "${TEST_PACKAGES[@]}" "${BENCH_PACKAGES[@]}")
fi

missing=()
for pkg in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#wanted[@]} packages present"
fi

# onnxruntime-node runs the ONNX outputs of the end-to-end tests in a real
# runtime. Its install script would fetch GPU parts, so it is skipped; the CPU
# binaries ship inside the npm package. Kept in an ignored folder.
if [[ "${1:-}" != "--build" ]]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  ort_dir="$here/.cache/onnxruntime"
  if [[ ! -d "$ort_dir/node_modules/onnxruntime-node" ]]; then
    if ! command -v npm >/dev/null 2>&1; then
      # Debian ships npm apart from nodejs; some images' nodejs bundles it.
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends npm
    fi
    mkdir -p "$ort_dir"
    [[ -f "$ort_dir/package.json" ]] || echo '{"name":"bonsai-test-runtime","private":true}' > "$ort_dir/package.json"
    (cd "$ort_dir" && npm install --no-audit --no-fund --ignore-scripts onnxruntime-node@1 >/dev/null)
  fi
fi
