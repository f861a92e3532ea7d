#!/usr/bin/env bash
# Fetch the pinned CUTLASS/CuTe headers (nvidia-cutlass==4.2.0.0 from PyPI) into third_party/cutlass/include.
# Headers only; nothing of CUTLASS is committed (third_party/ is ignored). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dest="$here/third_party/cutlass"
version="4.2.0.0"
if [ -f "$dest/include/cute/tensor.hpp" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  echo "CUTLASS $version headers already in $dest/include"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps "nvidia-cutlass==$version" -d "$tmp"
rm -rf "$dest"
mkdir -p "$dest"
python3 - "$tmp"/nvidia_cutlass-*.whl "$dest" <<'PY'
import sys, zipfile, os
whl, dest = sys.argv[1], sys.argv[2]
prefix = "cutlass_library/source/include/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, "include", name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                dst.write(src.read())
PY
echo "$version" > "$dest/VERSION"
echo "CUTLASS $version headers installed in $dest/include"
