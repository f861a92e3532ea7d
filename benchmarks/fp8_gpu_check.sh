#!/usr/bin/env bash
# FP8 forward on a GPU machine: the FP8 GPU tests, the accuracy table and the timing table, with a short summary last.
# Usage: benchmarks/fp8_gpu_check.sh [build-dir] [extra args for fp8_accuracy.py]. Logs go to $OUT (or ./fp8-logs).
set -u
B=${1:-build/fp8}
shift || true
OUT=${OUT:-./fp8-logs}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.limit --format=csv > "$OUT/gpu.txt" 2>&1
# One small case first: a kernel that hangs must not eat the whole time limit.
timeout 30 "$B/tests/flash3_tests" --gtest_filter='*Fp8Direct*hd128_nomask_perhead*' > "$OUT/smoke.log" 2>&1
rc=$?
echo "smoke rc=$rc" >> "$OUT/smoke.log"
if [ $rc -ne 0 ]; then
  echo "==== smoke test failed (rc=$rc)"; tail -40 "$OUT/smoke.log"; exit 1
fi
timeout ${FP8_TEST_TIMEOUT:-150} "$B/tests/flash3_tests" --gtest_filter='*Fp8*' > "$OUT/tests.log" 2>&1
echo "fp8 tests rc=$?" >> "$OUT/tests.log"
PYTHONUNBUFFERED=1 timeout 150 python3 benchmarks/fp8_accuracy.py --lib "$B/libflash3.so" "$@" > "$OUT/fp8.md" 2>&1
echo "fp8_accuracy rc=$?" >> "$OUT/fp8.md"
echo "==== summary"
cat "$OUT/gpu.txt"
grep -E "^\[  FAILED  \]|^\[  PASSED  \]|^\[  SKIPPED \]|tests ran|rc=" "$OUT/tests.log" | sort | uniq | head -40
grep -B2 -A12 "Failure\|error" "$OUT/tests.log" | head -60
cat "$OUT/fp8.md"
