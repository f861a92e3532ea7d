#!/usr/bin/env bash
# compute-sanitizer memcheck and racecheck over a small GPU test grid (GPU machine only).
#   scripts/sanitize.sh [build-dir] [gtest-filter]
set -uo pipefail
build="${1:-build/release}"
filter="${2:-Grid/FlashForwardSmall.MatchesCpuReference/bf16_hd64_nomask_mha:Grid/FlashForwardSmall.MatchesCpuReference/bf16_hd128_causal_gqa4:Grid/FlashForwardVarlen.MatchesCpuReference/bf16_hd128_nomask:Grid/FlashForwardSmall.MatchesCpuReference/bf16_hd256_window37x11_mqa}"
export PATH=/usr/local/cuda/bin:$PATH
status=0
for tool in memcheck racecheck; do
  log="${OUT:-.}/sanitize-$tool.log"
  compute-sanitizer --tool "$tool" --error-exitcode 99 "$build/tests/flash3_tests" --gtest_brief=1 \
    --gtest_filter="$filter" > "$log" 2>&1
  rc=$?
  summary=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$log" | tail -1)
  ran=$(grep -E "^\[  PASSED  \]" "$log" | tail -1)
  echo "sanitize $tool: rc=$rc ${summary:-no summary} ${ran}"
  [ $rc -eq 0 ] || status=1
done
exit $status
