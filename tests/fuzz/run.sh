#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each, from its committed seeds plus the
# corpus grown by earlier runs in BUILD_DIR, and fails on any finding (crash,
# sanitizer report, leak, timeout, out-of-memory). A finding's input is
# left in BUILD_DIR/fuzz-findings/ to replay: BUILD_DIR/bin/fuzz_TARGET FILE.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
set -uo pipefail
build=$(cd "$1" && pwd)
seconds=$2
shift 2
targets=("$@")
((${#targets[@]})) || targets=(safetensors onnx calibration spec)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-14/bin/llvm-symbolizer}

passed=0
failed=0
for target in "${targets[@]}"; do
  corpus=$build/fuzz-corpus/$target
  findings=$build/fuzz-findings
  log=$build/fuzz-$target.log
  mkdir -p "$corpus" "$findings"
  dict=()
  [[ -f $here/$target.dict ]] && dict=(-dict="$here/$target.dict")
  # One BLAS thread: the calibration parser calls BLAS, and the fuzzer
  # shares the machine. A hostile upload gets 10 s and 2 GiB per input.
  if OPENBLAS_NUM_THREADS=1 UBSAN_OPTIONS=print_stacktrace=1 \
     "$build/bin/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$findings/$target-" "${dict[@]}" \
       "$corpus" "$here/seeds/$target" >"$log" 2>&1; then
    passed=$((passed + 1))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    echo "fuzz: $target: no finding in ${seconds}s (${execs:-?} inputs, ${rate:-?}/s, corpus $(ls "$corpus" | wc -l))"
  else
    failed=$((failed + 1))
    echo "fuzz: $target: FINDING (log $log)"
    grep -E "^(==[0-9]+==ERROR|SUMMARY|.*runtime error)|Test unit written" "$log" | head -20
    tail -40 "$log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
