"""PEP 517 build backend for the flash3 Python package (in-tree, standard library only).

`pip install .` (also with --no-build-isolation, offline) builds a wheel holding python/flash3/ and a libflash3.so
built by the repository's CMake (FLASH3_KERNELS selects the kernels, default all; the CUTLASS headers come from
scripts/setup-cutlass.sh, which runs only if third_party/cutlass is missing). With FLASH3_LIBRARY=/path/libflash3.so
set at build time, that prebuilt library is packaged instead and nothing is compiled.

No setuptools, wheel or scikit-build-core is needed: a wheel is a zip file with a small dist-info, written here. The
package links nothing against torch, so the wheel is tagged py3-none-<platform> (any Python 3, any torch).
Environment:
  FLASH3_LIBRARY       package this prebuilt libflash3.so (skips CMake)
  FLASH3_KERNELS       the CMake kernel filter (default "all")
  FLASH3_BUILD_DIR     CMake build folder (default build/python-wheel)
  FLASH3_BUILD_JOBS    parallel jobs (default: the CPU count)
"""
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

NAME = "flash3"
VERSION = "0.1.0"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG_DIR = os.path.join(ROOT, "python", NAME)
SUMMARY = "FlashAttention-3 for Hopper (H100/H200) with FA3's Python interface, bound through a C ABI"
METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: {SUMMARY}
Requires-Python: >=3.10
Provides-Extra: test
Requires-Dist: pytest; extra == "test"

flash3: FlashAttention-3 forward/backward kernels for sm_90 GPUs. `from flash3 import flash_attn_func` is a drop-in
for FA3's flash_attn_interface. PyTorch (>= 2.4) is needed at run time but is not declared as a dependency so that
installing flash3 never replaces the torch you have. See docs/python.md.
"""


def _log(msg):
    print(f"flash3 build: {msg}", file=sys.stderr, flush=True)


def _platform_tag():
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def _built_library():
    """The path of a libflash3.so to package: $FLASH3_LIBRARY, else one built here with CMake."""
    prebuilt = os.environ.get("FLASH3_LIBRARY")
    if prebuilt:
        if not os.path.isfile(prebuilt):
            raise RuntimeError(f"FLASH3_LIBRARY={prebuilt} does not exist")
        _log(f"packaging the prebuilt {prebuilt}")
        return prebuilt
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install it (scripts/install-deps.sh), or set FLASH3_LIBRARY to a "
                               "prebuilt libflash3.so")
    if not os.path.isfile(os.path.join(ROOT, "third_party", "cutlass", "include", "cute", "tensor.hpp")):
        _log("CUTLASS headers missing: running scripts/setup-cutlass.sh (needs PyPI)")
        subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup-cutlass.sh")], check=True)
    build = os.environ.get("FLASH3_BUILD_DIR") or os.path.join(ROOT, "build", "python-wheel")
    kernels = os.environ.get("FLASH3_KERNELS", "all")
    jobs = os.environ.get("FLASH3_BUILD_JOBS") or str(os.cpu_count() or 2)
    env = dict(os.environ)
    if shutil.which("nvcc") is None and os.path.exists("/usr/local/cuda/bin/nvcc"):
        env["PATH"] = "/usr/local/cuda/bin:" + env.get("PATH", "")
    _log(f"CMake build of libflash3 in {build} (FLASH3_KERNELS={kernels}, -j{jobs})")
    subprocess.run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                    f"-DFLASH3_KERNELS={kernels}", "-DFLASH3_BUILD_TESTS=OFF", "-DFLASH3_BUILD_BENCHMARKS=OFF"],
                   check=True, env=env)
    subprocess.run(["cmake", "--build", build, "--target", "flash3", "--parallel", jobs], check=True, env=env)
    return os.path.join(build, "libflash3.so")


def _record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _write_wheel(wheel_directory, files, tag):
    """files: list of (arcname, bytes). Adds the dist-info and returns the wheel's file name."""
    dist_info = f"{NAME}-{VERSION}.dist-info"
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: flash3_build_backend\nRoot-Is-Purelib: false\nTag: {tag}\n"
    files = list(files) + [(f"{dist_info}/METADATA", METADATA.encode()),
                           (f"{dist_info}/WHEEL", wheel_meta.encode()),
                           (f"{dist_info}/top_level.txt", f"{NAME}\n".encode())]
    record = [_record_line(a, d) for a, d in files] + [f"{dist_info}/RECORD,,"]
    files.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    name = f"{NAME}-{VERSION}-{tag}.whl"
    os.makedirs(wheel_directory, exist_ok=True)
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in files:
            info = zipfile.ZipInfo(arcname, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if arcname.endswith(".so") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return name


def _package_files():
    out = []
    for dirpath, dirnames, filenames in os.walk(PKG_DIR):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "lib")]
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                arc = os.path.relpath(path, os.path.dirname(PKG_DIR)).replace(os.sep, "/")
                with open(path, "rb") as fh:
                    out.append((arc, fh.read()))
    return out


def _tag():
    return f"py3-none-{_platform_tag()}"


# ---- PEP 517 / PEP 660 hooks ----------------------------------------------------------------------------------------

def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    lib = _built_library()
    with open(lib, "rb") as fh:
        files = _package_files() + [(f"{NAME}/lib/libflash3.so", fh.read())]
    return _write_wheel(wheel_directory, files, _tag())


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """`pip install -e .`: a .pth pointing at python/, and the library copied into python/flash3/lib/ (ignored by
    git), so edits to the Python files take effect without reinstalling."""
    lib = _built_library()
    dest = os.path.join(PKG_DIR, "lib")
    os.makedirs(dest, exist_ok=True)
    if os.path.abspath(lib) != os.path.abspath(os.path.join(dest, "libflash3.so")):
        shutil.copyfile(lib, os.path.join(dest, "libflash3.so"))
    pth = (os.path.join(ROOT, "python") + "\n").encode()
    return _write_wheel(wheel_directory, [(f"__editable__.{NAME}.pth", pth)], _tag())


def build_sdist(sdist_directory, config_settings=None):
    """A source archive of the whole repository's tracked files (git ls-files), to build elsewhere."""
    import tarfile

    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    base = f"{NAME}-{VERSION}"
    name = f"{base}.tar.gz"
    os.makedirs(sdist_directory, exist_ok=True)
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as tar:
        for rel in files.decode().split("\0"):
            if rel and os.path.isfile(os.path.join(ROOT, rel)):
                tar.add(os.path.join(ROOT, rel), arcname=f"{base}/{rel}")
        pkg_info = METADATA.encode()
        info = tarfile.TarInfo(f"{base}/PKG-INFO")
        info.size = len(pkg_info)
        tar.addfile(info, io.BytesIO(pkg_info))
    return name
