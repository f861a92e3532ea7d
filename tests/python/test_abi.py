"""The ctypes layer (flash3._lib) against the C header and the library. Needs neither torch nor a GPU."""
import ctypes
import json
import os
import shutil
import subprocess

import pytest

from conftest import LIB_REASON, ROOT, needs_lib
from flash3 import _lib

HEADER_DIR = os.path.join(ROOT, "include")

_PROBE = r"""
#include <stddef.h>
#include <stdio.h>
#include "flash3/flash3_c.h"
#define F(S, f) printf("\"%s.%s\": [%zu, %zu],\n", #S, #f, offsetof(S, f), sizeof(((S*)0)->f));
int main(void) {
  printf("{\n");
%FIELDS%
  printf("\"size.flash3_tensor\": [%zu, 0],\n", sizeof(flash3_tensor));
  printf("\"api\": [%d, %d],\n", FLASH3_C_API_VERSION, FLASH3_MAX_RANK);
  printf("\"dtypes\": [%d, %d, %d, %d, %d],\n", FLASH3_DTYPE_FLOAT16, FLASH3_DTYPE_BFLOAT16, FLASH3_DTYPE_FLOAT32,
         FLASH3_DTYPE_FLOAT8_E4M3, FLASH3_DTYPE_INT32);
  printf("\"statuses\": [%d, %d, %d, %d, %d, %d],\n", FLASH3_STATUS_SUCCESS, FLASH3_STATUS_INVALID_ARGUMENT,
         FLASH3_STATUS_NOT_SUPPORTED, FLASH3_STATUS_NO_DEVICE, FLASH3_STATUS_CUDA_ERROR, FLASH3_STATUS_INTERNAL_ERROR);
  printf("\"size.flash3_attention_params\": [%zu, 0]\n}\n", sizeof(flash3_attention_params));
  return 0;
}
"""


def _c_layout(tmp_path):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) to compile the header probe")
    fields = []
    for cname, cls in (("flash3_tensor", _lib.Tensor), ("flash3_attention_params", _lib.Params)):
        fields += [f"  F({cname}, {name})" for name, _ in cls._fields_]
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text(_PROBE.replace("%FIELDS%", "\n".join(fields)))
    subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", HEADER_DIR, str(src), "-o", str(exe)], check=True,
                   capture_output=True, text=True)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


def test_ctypes_mirror_matches_header(tmp_path):
    c = _c_layout(tmp_path)
    py = {}
    for cname, cls in (("flash3_tensor", _lib.Tensor), ("flash3_attention_params", _lib.Params)):
        for name, ctype in cls._fields_:
            py[f"{cname}.{name}"] = [getattr(cls, name).offset, ctypes.sizeof(ctype)]
    bad = {k: (c.get(k), py.get(k)) for k in py if c.get(k) != py[k]}
    assert not bad, f"offset/size mismatches (C, ctypes): {bad}"
    assert c["size.flash3_attention_params"][0] == _lib.PARAMS_SIZE
    assert c["size.flash3_tensor"][0] == ctypes.sizeof(_lib.Tensor)
    assert c["api"] == [_lib.C_API_VERSION, _lib.MAX_RANK]
    assert c["dtypes"] == [_lib.DTYPE_FLOAT16, _lib.DTYPE_BFLOAT16, _lib.DTYPE_FLOAT32, _lib.DTYPE_FLOAT8_E4M3,
                           _lib.DTYPE_INT32]
    assert c["statuses"] == sorted(_lib.STATUS_NAMES)


def test_fast_packer_agrees_with_ctypes_mirror():
    """The struct.pack_into path writes exactly what setting the ctypes fields would."""
    buf = _lib.new_params(cu_seqlens_q=0x1000, cu_seqlens_k=0x2000, seqused_q=0x3000, seqused_k=0x4000,
                          varlen_batch=7, max_seqlen_q=123, max_seqlen_k=456, softmax_scale=0.25, causal=True,
                          window_left=5, window_right=0, softcap=3.5, deterministic=True, stream=0xABC0,
                          workspace=0x5000, workspace_bytes=256)
    _lib.pack_tensor(buf, "dv", 0xDEAD0, _lib.DTYPE_BFLOAT16, (3, 5, 7), (35, 7, 1))
    _lib.pack_tensor(buf, "v_descale", 0xBEEF0, _lib.DTYPE_FLOAT32, (2, 4), (4, 1))
    p = _lib.Params.from_buffer(buf)
    want = _lib.Params()
    want.struct_size = _lib.PARAMS_SIZE
    for name, value in dict(cu_seqlens_q=0x1000, cu_seqlens_k=0x2000, seqused_q=0x3000, seqused_k=0x4000,
                            varlen_batch=7, max_seqlen_q=123, max_seqlen_k=456, softmax_scale=0.25, causal=1,
                            window_left=5, window_right=0, softcap=3.5, deterministic=1, stream=0xABC0,
                            workspace=0x5000, workspace_bytes=256).items():
        setattr(want, name, value)
    want.dv.data, want.dv.dtype, want.dv.rank = 0xDEAD0, _lib.DTYPE_BFLOAT16, 3
    want.dv.shape[:3], want.dv.stride[:3] = (3, 5, 7), (35, 7, 1)
    want.v_descale.data, want.v_descale.dtype, want.v_descale.rank = 0xBEEF0, _lib.DTYPE_FLOAT32, 2
    want.v_descale.shape[:2], want.v_descale.stride[:2] = (2, 4), (4, 1)
    assert bytes(buf) == bytes(want)
    assert p.window_left == 5 and p.stream == 0xABC0
    _lib.set_workspace(buf, 0x7000, 512)
    assert (p.workspace, p.workspace_bytes) == (0x7000, 512)


def test_library_not_found_message(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASH3_LIBRARY", str(tmp_path / "nope.so"))
    monkeypatch.setattr(_lib, "_library", None)
    with pytest.raises(_lib.LibraryNotFoundError, match="FLASH3_LIBRARY"):
        _lib.get()


def _valid_forward(lib, causal=False):
    """A valid batch-mode forward with made-up (aligned, never dereferenced) device addresses."""
    b, s, h, d = 2, 64, 4, 128
    buf = _lib.new_params(causal=causal)
    contiguous = (s * h * d, h * d, d, 1)
    for i, name in enumerate(("q", "k", "v", "out")):
        _lib.pack_tensor(buf, name, 0x100000 * (i + 1), _lib.DTYPE_BFLOAT16, (b, s, h, d), contiguous)
    _lib.pack_tensor(buf, "lse", 0x900000, _lib.DTYPE_FLOAT32, (b, h, s), (h * s, s, 1))
    return buf


@needs_lib
def test_library_loads():
    lib = _lib.get()
    assert lib.api_version >= _lib.C_API_VERSION
    assert lib.version.count(".") == 2
    assert isinstance(lib.kernel_list(), list)


@needs_lib
def test_validate_accepts_valid_params_for_sm90():
    lib = _lib.get()
    lib.validate_forward(_valid_forward(lib), 90)
    lib.validate_forward(_valid_forward(lib, causal=True), 90)


@needs_lib
@pytest.mark.parametrize("field,bad,match", [
    ("q_stride", None, r"q\.stride\[3\]"),
    ("window", None, "window_right"),
    ("descale", None, "q_descale"),
    ("fp8", None, "FP8"),
])
def test_status_maps_to_exception(field, bad, match):
    lib = _lib.get()
    buf = _valid_forward(lib)
    cls = _lib.Flash3InvalidArgumentError
    if field == "q_stride":
        _lib.pack_tensor(buf, "q", 0x100000, _lib.DTYPE_BFLOAT16, (2, 64, 4, 128), (64 * 512, 512, 128, 2))
    elif field == "window":
        buf = _lib.new_params(causal=True, window_right=3)
    elif field == "descale":
        _lib.pack_tensor(buf, "q_descale", 0xA00000, _lib.DTYPE_FLOAT32, (2, 4), (4, 1))
    elif field == "fp8":  # e4m3 inputs are valid since the FP8 forward exists; it has no softcap kernels
        buf = _lib.new_params(softcap=10.0)
        for i, name in enumerate(("q", "k", "v", "out")):
            _lib.pack_tensor(buf, name, 0x100000 * (i + 1),
                             _lib.DTYPE_BFLOAT16 if name == "out" else _lib.DTYPE_FLOAT8_E4M3, (2, 64, 4, 128),
                             (64 * 512, 512, 128, 1))
        cls = _lib.Flash3NotSupportedError
    with pytest.raises(cls, match=match) as e:
        lib.validate_forward(buf, 90)
    assert isinstance(e.value, _lib.Flash3Error)
    assert e.value.status == (_lib.STATUS_NOT_SUPPORTED if field == "fp8" else _lib.STATUS_INVALID_ARGUMENT)
    if cls is _lib.Flash3InvalidArgumentError:
        assert isinstance(e.value, ValueError)
    else:
        assert isinstance(e.value, NotImplementedError)


@needs_lib
def test_workspace_size_and_backward_validation():
    lib = _lib.get()
    try:
        n_full = lib.forward_workspace_size(_valid_forward(lib))
        n_causal = lib.forward_workspace_size(_valid_forward(lib, causal=True))
    except _lib.Flash3NoDeviceError as e:
        pytest.skip(f"workspace queries validate against the current device: {e}")
    assert n_full >= 0 and n_causal >= n_full


@pytest.mark.skipif(LIB_REASON is not None, reason=LIB_REASON or "")
def test_no_device_is_reported(request):
    """Without a GPU, a valid call reports NO_DEVICE (never a crash); with one, this test has nothing to check."""
    lib = _lib.get()
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = os.path.exists("/dev/nvidiactl")
    if has_gpu:
        pytest.skip("a CUDA device is present: NO_DEVICE cannot be provoked")
    with pytest.raises(_lib.Flash3NoDeviceError, match="no CUDA device"):
        lib.forward(_valid_forward(lib))
