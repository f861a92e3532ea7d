#!/usr/bin/env bash
# Runs every test: builds (kernel subset FLASH3_KERNELS, default the CI subset below) and runs CTest.
# CPU tests always run; GPU tests report SKIPPED with the reason where no CUDA device is present.
#   FLASH3_KERNELS   default "dtype=bf16;hdim=128;mask=none;softcap=0" (what 2 cores build in a few minutes)
#   BUILD_DIR        default build/test
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
"$here/scripts/install-deps.sh"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
build="${BUILD_DIR:-build/test}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DFLASH3_KERNELS="${FLASH3_KERNELS:-dtype=bf16;hdim=128;mask=none;softcap=0}"
cmake --build "$build" --parallel "$(nproc)"
ctest --test-dir "$build" --output-on-failure --parallel "$(nproc)" "$@"

# Python package tests (tests/python) against the library just built. Without PyTorch or a GPU they report skipped
# with the reason; the ctypes/C-ABI tests need neither. pytest itself comes from the environment, else it is
# installed into the build folder (never into the system); if that fails too, the step says so and is skipped.
case "$build" in /*) build_abs="$build" ;; *) build_abs="$here/$build" ;; esac
py_deps="$build_abs/python-test-deps"
if python3 -c "import pytest" 2>/dev/null; then
  py_path="${PYTHONPATH:-}"
elif [ -d "$py_deps/pytest" ] || python3 -m pip install --quiet --disable-pip-version-check --target "$py_deps" pytest >/dev/null 2>&1; then
  py_path="$py_deps${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "tests/python: SKIPPED (pytest is not installed and could not be installed: python3 -m pip install pytest)"
  exit 0
fi
FLASH3_LIBRARY="$build_abs/libflash3.so" PYTHONPATH="$py_path" python3 -m pytest -q -rs -p no:cacheprovider \
  "$here/tests/python"
