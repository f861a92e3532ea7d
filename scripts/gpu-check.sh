#!/usr/bin/env bash
# The GPU workflow in one call: build, run the test suite, time a short benchmark, compare with cuDNN (if PyTorch is
# there), and print a compact summary LAST (the device machine's reply carries the end of the output).
#
#   scripts/gpu-check.sh [build-dir]          default build dir: build/release
#
# A build dir that already has build.ninja is just rebuilt (`ninja -C`); otherwise it is configured with
#   cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH3_KERNELS=${FLASH3_KERNELS:-all}
# Environment:
#   OUT               where the full logs go (default ./gpu-check-logs)
#   FLASH3_KERNELS    kernel subset for a fresh configure (default all)
#   TEST_FILTER       --gtest_filter for flash3_tests (default: all tests)
#   BENCH_ARGS        replaces the default benchmark arguments
#   SKIP_BUILD=1      use the build dir as it is;  SKIP_TESTS=1, SKIP_BENCH=1, SKIP_COMPARE=1 skip a stage
#   STAGE_TIMEOUT     seconds per stage, 0 = none (default 0)
# Exit status: 0 all good; 1 the build failed, a test failed (or the test binary crashed) or a benchmark check
# failed; 2 no NVIDIA GPU here.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build/release}"
case "$BUILD" in /*) ;; *) BUILD="$PWD/$BUILD" ;; esac
LOGS="${OUT:-./gpu-check-logs}"
mkdir -p "$LOGS" || { echo "gpu-check: cannot create log dir $LOGS"; exit 1; }
LOGS="$(cd "$LOGS" && pwd)"
STAGE_TIMEOUT="${STAGE_TIMEOUT:-0}"
DEFAULT_BENCH_ARGS="--seqlen 1024,4096 --hdim 64,128,256 --causal 0,1 --check"
BENCH_ARGS="${BENCH_ARGS:-$DEFAULT_BENCH_ARGS}"

summary=()      # lines of the final summary
status=0        # exit status
note() { summary+=("$*"); }
log() { echo "gpu-check: $*" >&2; }

# Runs "$@" with output to $LOGS/<name>.log (and the terminal's stderr gets a one-line start notice); returns its rc.
run_stage() {
  local name="$1"
  shift
  log "$name: $* (log: $LOGS/$name.log)"
  local start=$SECONDS rc
  if [ "$STAGE_TIMEOUT" -gt 0 ] && command -v timeout >/dev/null; then
    timeout --kill-after=30 "$STAGE_TIMEOUT" "$@" >"$LOGS/$name.log" 2>&1
  else
    "$@" >"$LOGS/$name.log" 2>&1
  fi
  rc=$?
  echo "[gpu-check] exit $rc after $((SECONDS - start)) s" >>"$LOGS/$name.log"
  log "$name: exit $rc after $((SECONDS - start)) s"
  return $rc
}

print_summary() {
  echo
  echo "==================== gpu-check summary ===================="
  local line
  for line in "${summary[@]}"; do echo "$line"; done
  echo "logs: $LOGS"
  echo "gpu-check: exit $status"
}

# ---- 0. is there a GPU? -----------------------------------------------------------------------------------------
if command -v nvidia-smi >/dev/null; then
  if ! nvidia-smi -L >"$LOGS/gpu.log" 2>&1 || ! grep -q '^GPU [0-9]' "$LOGS/gpu.log"; then
    echo "gpu-check: no NVIDIA GPU found (nvidia-smi -L: $(head -c 300 "$LOGS/gpu.log" | tr '\n' ' '))"
    exit 2
  fi
  nvidia-smi --query-gpu=index,name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,temperature.gpu \
    --format=csv >>"$LOGS/gpu.log" 2>&1
  nvidia-smi -q >"$LOGS/nvidia-smi-q.log" 2>&1
  gpu_line="$(nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader \
    2>/dev/null | head -1)"
  note "GPU: $gpu_line  (name, driver, SM clock now, max SM clock, power limit)"
elif ls /dev/nvidia[0-9]* >/dev/null 2>&1; then
  note "GPU: /dev/nvidia* present, nvidia-smi not installed (clocks and power n/a)"
else
  echo "gpu-check: no NVIDIA GPU found (no nvidia-smi and no /dev/nvidia* device)"
  exit 2
fi

# ---- 1. build -----------------------------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" = 1 ]; then
  note "build: skipped (SKIP_BUILD=1), using $BUILD"
else
  build_ok=1
  if [ -f "$BUILD/build.ninja" ]; then
    run_stage build ninja -C "$BUILD" || build_ok=0
    how="ninja -C $BUILD (existing build dir)"
  else
    run_stage configure cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      "-DFLASH3_KERNELS=${FLASH3_KERNELS:-all}" || build_ok=0
    if [ $build_ok = 1 ]; then run_stage build ninja -C "$BUILD" || build_ok=0; fi
    how="fresh configure, FLASH3_KERNELS='${FLASH3_KERNELS:-all}', $BUILD"
  fi
  if [ $build_ok = 1 ]; then
    note "build: ok ($how)"
  else
    note "build: FAILED ($how); last lines:"
    failed_log="$LOGS/build.log"
    [ -f "$failed_log" ] || failed_log="$LOGS/configure.log"
    while IFS= read -r line; do note "    $line"; done < <({ grep -E 'error|Error|FAILED' "$failed_log" ||
      tail -15 "$failed_log"; } | head -15)
    status=1
    print_summary
    exit $status
  fi
fi
# A cached FLASH3_KERNELS tells which kernels this build has.
if [ -f "$BUILD/CMakeCache.txt" ]; then
  kernels="$(sed -n 's/^FLASH3_KERNELS:[A-Z]*=//p' "$BUILD/CMakeCache.txt" | head -1)"
  note "kernels: FLASH3_KERNELS='${kernels}'"
fi

find_exe() {  # find_exe NAME: the first executable of that name in the build dir
  local p
  for p in "$BUILD/$1" "$BUILD/tests/$1" "$BUILD/benchmarks/$1"; do
    if [ -x "$p" ] && [ -f "$p" ]; then echo "$p"; return 0; fi
  done
  find "$BUILD" -maxdepth 4 -type f -name "$1" -perm -u+x 2>/dev/null | head -1
}

# ---- 2. tests ---------------------------------------------------------------------------------------------------
if [ "${SKIP_TESTS:-0}" = 1 ]; then
  note "tests: skipped (SKIP_TESTS=1)"
else
  tests_bin="$(find_exe flash3_tests)"
  if [ -n "$tests_bin" ]; then
    test_args=(--gtest_brief=1)
    [ -n "${TEST_FILTER:-}" ] && test_args+=("--gtest_filter=$TEST_FILTER")
    run_stage tests "$tests_bin" "${test_args[@]}"
    trc=$?
    tl="$LOGS/tests.log"
    count() { grep -E "^\[  $1 *\] [0-9]+ tests?" "$tl" | tail -1 | sed -E 's/^\[[^]]*\] ([0-9]+) .*/\1/'; }
    passed="$(count PASSED)"
    failed="$(count FAILED)"
    skipped="$(count SKIPPED)"
    total="$(grep -E '^\[==========\] [0-9]+ tests? from .* ran' "$tl" | tail -1 | sed -E 's/^\[=+\] ([0-9]+) .*/\1/')"
    if [ -z "$total" ]; then
      note "tests: CRASHED or did not finish (exit $trc, no gtest summary); last lines:"
      while IFS= read -r line; do note "    $line"; done < <(tail -8 "$tl")
      status=1
    else
      note "tests: ${passed:-0} passed, ${failed:-0} failed, ${skipped:-0} skipped of $total (exit $trc)"
      if [ "${failed:-0}" != 0 ] || [ $trc != 0 ]; then
        status=1
        while IFS= read -r line; do note "    $line"; done < <(grep -E '^\[  FAILED  \] [A-Za-z_]' "$tl" |
          sed -E 's/ \([0-9]+ ms\)$//' | sort -u | head -20)
      fi
    fi
  elif command -v ctest >/dev/null && [ -f "$BUILD/CTestTestfile.cmake" ]; then
    run_stage tests ctest --test-dir "$BUILD" --output-on-failure
    trc=$?
    line="$(grep -E 'tests passed, [0-9]+ tests? failed out of' "$LOGS/tests.log" | tail -1)"
    note "tests (ctest): ${line:-no summary} (exit $trc)"
    [ $trc != 0 ] && status=1
  else
    note "tests: FAILED: no flash3_tests binary in $BUILD (built with -DFLASH3_BUILD_TESTS=OFF?)"
    status=1
  fi
fi

# ---- 3. benchmark -----------------------------------------------------------------------------------------------
if [ "${SKIP_BENCH:-0}" = 1 ]; then
  note "bench: skipped (SKIP_BENCH=1)"
else
  bench_bin="$(find_exe flash3-bench)"
  if [ -z "$bench_bin" ]; then
    note "bench: no flash3-bench binary in $BUILD"
  else
    # shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
    run_stage bench "$bench_bin" $BENCH_ARGS --csv "$LOGS/bench.csv" --json "$LOGS/bench.json" --quiet
    brc=$?
    bl="$LOGS/bench.log"
    note "bench: flash3-bench $BENCH_ARGS (exit $brc)"
    while IFS= read -r line; do note "  $line"; done < <(grep -E '^(GPU |clocks|ceiling )' "$bl")
    while IFS= read -r line; do note "  $line"; done < <(grep -E '^\|' "$bl")
    while IFS= read -r line; do note "  $line"; done < <(grep -E '^([0-9]+ ok, |check FAILED|flash3-bench: )' "$bl")
    case $brc in
      0) ;;
      3) note "  (no benchmark row ran: every config was skipped in this build)" ;;
      *) status=1 ;;
    esac
  fi
fi

# ---- 4. peer comparison (needs PyTorch) ---------------------------------------------------------------------------
if [ "${SKIP_COMPARE:-0}" = 1 ]; then
  note "compare: skipped (SKIP_COMPARE=1)"
elif ! command -v python3 >/dev/null || ! python3 -c 'import torch' >/dev/null 2>&1; then
  note "compare: skipped (python3 cannot import torch)"
else
  lib="$(find "$BUILD" -maxdepth 2 -name 'libflash3.so*' -type f 2>/dev/null | head -1)"
  if [ -z "$lib" ]; then
    note "compare: skipped (no libflash3.so in $BUILD)"
  else
    run_stage compare python3 "$ROOT/benchmarks/compare.py" --quick --lib "$lib" --out "$LOGS/compare-quick.md"
    crc=$?
    note "compare: benchmarks/compare.py --quick (exit $crc; $LOGS/compare-quick.md)"
    while IFS= read -r line; do note "  $line"; done < <(grep -E '^(\||GPU:)' "$LOGS/compare-quick.md" 2>/dev/null ||
      tail -5 "$LOGS/compare.log")
  fi
fi

print_summary
exit $status
