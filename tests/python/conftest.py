"""pytest setup for flash3's Python tests.

The package is imported from the source tree (python/), unless FLASH3_TEST_INSTALLED=1 asks for the installed one.
The library is the package's usual choice ($FLASH3_LIBRARY, flash3/lib/, else the newest build/*/libflash3.so);
scripts/test.sh sets FLASH3_LIBRARY to the library it just built.

Tests that need something absent are skipped with the reason, never passed:
  no_torch   torch is not importable
  no_gpu     no CUDA device (or not an sm_90 one)
  no_lib     libflash3.so not found
"""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if os.environ.get("FLASH3_TEST_INSTALLED") != "1":
    sys.path.insert(0, os.path.join(ROOT, "python"))

try:
    import torch

    TORCH_REASON = None
except ImportError as e:  # pragma: no cover - depends on the machine
    torch = None
    TORCH_REASON = f"PyTorch is not installed ({e})"


def _lib_reason():
    from flash3 import _lib

    try:
        _lib.get()
        return None
    except (OSError, _lib.LibraryNotFoundError) as e:
        return f"libflash3.so not loadable: {e}"


def _gpu_reason():
    if TORCH_REASON:
        return TORCH_REASON
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) != (9, 0):
        return f"flash3's kernels need an sm_90 GPU; this one is {torch.cuda.get_device_name()} (sm_{major}{minor})"
    return _lib_reason()


LIB_REASON = _lib_reason()
GPU_REASON = _gpu_reason()

needs_torch = pytest.mark.skipif(TORCH_REASON is not None, reason=TORCH_REASON or "")
needs_lib = pytest.mark.skipif(LIB_REASON is not None, reason=LIB_REASON or "")
needs_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")


def pytest_report_header(config):
    lines = [f"flash3 tests: torch {'missing' if torch is None else torch.__version__}"]
    if LIB_REASON is None:
        from flash3 import _lib

        lib = _lib.get()
        lines.append(f"libflash3: {lib.path} (flash3 {lib.version}, C API {lib.api_version}, "
                     f"{len(lib.kernel_list())} kernels)")
    else:
        lines.append(LIB_REASON)
    lines.append(f"GPU tests: {'run' if GPU_REASON is None else 'skipped: ' + GPU_REASON}")
    return lines
