#!/usr/bin/env bash
# Every flash3 benchmark in one go, on a machine with an H100/H200 and PyTorch: builds (optional), runs flash3-bench's
# sweep (fwd, bwd, fwdbwd and decode, with the ceilings and --check), compare.py against PyTorch SDPA's cuDNN, FA2 and
# memory-efficient backends for fwd, bwd and fwdbwd (markdown + JSON + PNG per mode), and prints a short summary
# table last. A step that fails is reported in the summary; the later steps still run.
#
#   benchmarks/run_all.sh                        # build into build/bench-gpu, full sweeps, results in out/bench-<date>
#   benchmarks/run_all.sh --quick                # fewer configs (seqlen 1k and 4k; three decode shapes)
#   benchmarks/run_all.sh --docs                 # also copy compare.py's tables/plots into docs/benchmarks/
#   benchmarks/run_all.sh --no-build --bench PATH/flash3-bench --lib PATH/libflash3.so --out DIR
#
# Options:
#   --out DIR            results folder (default out/bench-YYYYmmdd-HHMMSS; out/ is git-ignored)
#   --build-dir DIR      CMake build folder (default build/bench-gpu)
#   --kernels FILTER     FLASH3_KERNELS for the build (default "dtype=bf16;hdim=64,128,256;softcap=0": the sweep's)
#   --no-build           use existing binaries (--bench / --lib, or those in --build-dir)
#   --bench PATH         flash3-bench binary        --lib PATH   libflash3.so for compare.py
#   --modes LIST         compare.py modes (default fwd,bwd,fwdbwd); flash3-bench runs these plus decode
#   --only bench|compare run one of the two benchmark steps (the summary reads whatever the folder holds)
#   --quick              short sweeps            --docs   copy <gpu>-<mode>.{md,json,png} into docs/benchmarks/
#   -j N                 build parallelism (default: all cores)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

OUT="out/bench-$(date -u +%Y%m%d-%H%M%S)"
BUILD=build/bench-gpu
KERNELS="dtype=bf16;hdim=64,128,256;softcap=0"
DO_BUILD=1
BENCH=""
LIB=""
MODES="fwd,bwd,fwdbwd"
ONLY=""
QUICK=0
DOCS=0
JOBS="$(nproc 2>/dev/null || echo 4)"

die() { echo "run_all.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
    --build-dir) BUILD="${2:?}"; shift 2 ;;
    --kernels) KERNELS="${2:?}"; shift 2 ;;
    --no-build) DO_BUILD=0; shift ;;
    --bench) BENCH="${2:?}"; shift 2 ;;
    --lib) LIB="${2:?}"; shift 2 ;;
    --modes) MODES="${2:?}"; shift 2 ;;
    --only) ONLY="${2:?}"; [ "$ONLY" = bench ] || [ "$ONLY" = compare ] || die "--only: bench or compare"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --docs) DOCS=1; shift ;;
    -j) JOBS="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

mkdir -p "$OUT" || die "cannot create $OUT"
OUT="$(cd "$OUT" && pwd)"
declare -a STEPS=()
step_result() { STEPS+=("$(printf '%-26s %s' "$1" "$2")"); }
T0=$(date +%s)

# ---- environment ----------------------------------------------------------------------------------------------------
{
  echo "date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
  echo "host: $(uname -srm)"
  rev="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo n/a)"
  git -C "$ROOT" diff --quiet HEAD -- 2>/dev/null || rev="$rev (+ local changes)"
  echo "git: $rev"
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,power.limit,temperature.gpu \
      --format=csv,noheader | sed 's/^/gpu: /'
  command -v nvcc >/dev/null && echo "nvcc: $(nvcc --version | tail -1)"
  python3 -c 'import sys, torch
print("python:", sys.version.split()[0], "| torch:", torch.__version__, "| CUDA:", torch.version.cuda,
      "| cuDNN:", torch.backends.cudnn.version())' 2>/dev/null || echo "torch: not importable"
  python3 -c 'import triton; print("triton:", triton.__version__)' 2>/dev/null ||
    echo "triton: not importable (compare.py falls back to CUDA events)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ---- build ----------------------------------------------------------------------------------------------------------
if [ "$DO_BUILD" = 1 ]; then
  echo "== build ($BUILD, FLASH3_KERNELS=$KERNELS, -j$JOBS)"
  tb=$(date +%s)
  if cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLASH3_BUILD_TESTS=OFF \
       -DFLASH3_KERNELS="$KERNELS" > "$OUT/build.log" 2>&1 &&
     ninja -C "$BUILD" -j"$JOBS" flash3 flash3-bench >> "$OUT/build.log" 2>&1; then
    step_result build "ok ($(( $(date +%s) - tb )) s)"
  else
    tail -30 "$OUT/build.log"
    step_result build "FAILED (see build.log)"
  fi
fi
[ -n "$BENCH" ] || BENCH="$BUILD/benchmarks/flash3-bench"
if [ -z "$LIB" ]; then
  for f in "$BUILD"/libflash3.so "$BUILD"/libflash3.so.*; do [ -f "$f" ] && LIB="$f" && break; done
fi
# cuBLAS for the ceilings: the toolkit's, else the one PyTorch ships.
torch_cublas="$(python3 -c 'import os, nvidia.cublas as c; print(os.path.join(list(c.__path__)[0], "lib"))' \
  2>/dev/null)"
for d in /usr/local/cuda/lib64 $torch_cublas; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
done

# ---- flash3-bench ---------------------------------------------------------------------------------------------------
if [ "$ONLY" != compare ]; then
  echo "== flash3-bench --mode $MODES,decode"
  tb=$(date +%s)
  args=(--mode "$MODES,decode" --check --csv "$OUT/bench.csv" --json "$OUT/bench.json")
  [ "$QUICK" = 1 ] && args+=(--seqlen "1024,4096" --decode-shapes "1x8192,32x8192,128x8192")
  if [ -x "$BENCH" ]; then
    "$BENCH" "${args[@]}" 2>"$OUT/bench.stderr" | tee "$OUT/bench.txt"
    rc=${PIPESTATUS[0]}
    case $rc in
      0) step_result flash3-bench "ok ($(( $(date +%s) - tb )) s)" ;;
      2) step_result flash3-bench "no CUDA device (see bench.txt)" ;;
      3) step_result flash3-bench "nothing ran (every config skipped)" ;;
      *) step_result flash3-bench "exit $rc (errors or failed checks: see bench.txt)"; tail -5 "$OUT/bench.stderr" ;;
    esac
  else
    step_result flash3-bench "not run: no binary at $BENCH"
  fi
fi

# ---- compare.py (+ plots) -------------------------------------------------------------------------------------------
if [ "$ONLY" != bench ]; then
  echo "== compare.py --mode $MODES"
  tb=$(date +%s)
  args=(--mode "$MODES" --peers "cudnn,flash,efficient" --out-dir "$OUT")
  [ -n "$LIB" ] && args+=(--lib "$LIB")
  [ "$QUICK" = 1 ] && args+=(--quick)
  PYTHONUNBUFFERED=1 python3 benchmarks/compare.py "${args[@]}" 2>"$OUT/compare.stderr" | tee "$OUT/compare.txt"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) step_result compare.py "ok ($(( $(date +%s) - tb )) s)" ;;
    1) step_result compare.py "MISMATCH or flash3 error (see compare.txt)" ;;
    *) step_result compare.py "exit $rc: $(tail -1 "$OUT/compare.txt" 2>/dev/null)"; tail -5 "$OUT/compare.stderr" ;;
  esac
  if [ "$DOCS" = 1 ]; then
    n=0
    for f in "$OUT"/*-fwd.* "$OUT"/*-bwd.* "$OUT"/*-fwdbwd.*; do
      [ -f "$f" ] && case "$f" in *.md|*.json|*.png) cp "$f" docs/benchmarks/ && n=$((n + 1)) ;; esac
    done
    step_result "copy to docs/benchmarks" "$n files"
  fi
fi

# ---- summary (last) -------------------------------------------------------------------------------------------------
echo
echo "================ summary ($(( $(date +%s) - T0 )) s; results in $OUT) ================"
printf '%s\n' "${STEPS[@]}"
echo
python3 benchmarks/summarize.py "$OUT" || true
