#!/usr/bin/env bash
# Installs what building flash3 needs on a fresh Debian/Ubuntu machine that has the CUDA toolkit (nvcc >= 12.3):
# cmake, ninja, GoogleTest (Debian packages, only when missing) and the pinned CUTLASS headers (PyPI).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
[ -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] || [ -f /usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake ] \
  || [ -f /usr/local/lib/cmake/GTest/GTestConfig.cmake ] || need+=(libgtest-dev libgmock-dev)
command -v python3 >/dev/null || need+=(python3 python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
command -v nvcc >/dev/null || { echo "install-deps: nvcc not found: install the CUDA toolkit (12.3 or newer)" >&2; exit 1; }
"$here/scripts/setup-cutlass.sh"
