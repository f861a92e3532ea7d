"""libflash3.so through its C ABI (include/flash3/flash3_c.h), with ctypes. No torch here.

The ABI's argument struct is mirrored twice:
  * `Params` / `Tensor`, ctypes Structures field by field, the readable and checkable mirror (tests compare their
    offsets with the C header compiled by a C compiler);
  * `_PACK`, `struct.Struct` formats derived from those offsets, used on the hot path: filling one struct with
    struct.pack_into is several times cheaper than setting 60-odd ctypes attributes, and the host time per call is
    part of what this package is measured on.

Library lookup: $FLASH3_LIBRARY (a path to libflash3.so), else the copy installed inside the package
(flash3/lib/libflash3.so), else the newest build/*/libflash3.so of a source checkout this file lives in.
"""
import ctypes
import glob
import os
import struct
import threading

C_API_VERSION = 2
MAX_RANK = 5

# flash3_dtype
DTYPE_FLOAT16 = 0
DTYPE_BFLOAT16 = 1
DTYPE_FLOAT32 = 2
DTYPE_FLOAT8_E4M3 = 3
DTYPE_INT32 = 4

# flash3_status
STATUS_SUCCESS = 0
STATUS_INVALID_ARGUMENT = 1
STATUS_NOT_SUPPORTED = 2
STATUS_NO_DEVICE = 3
STATUS_CUDA_ERROR = 4
STATUS_INTERNAL_ERROR = 5

STATUS_NAMES = {
    STATUS_SUCCESS: "FLASH3_STATUS_SUCCESS",
    STATUS_INVALID_ARGUMENT: "FLASH3_STATUS_INVALID_ARGUMENT",
    STATUS_NOT_SUPPORTED: "FLASH3_STATUS_NOT_SUPPORTED",
    STATUS_NO_DEVICE: "FLASH3_STATUS_NO_DEVICE",
    STATUS_CUDA_ERROR: "FLASH3_STATUS_CUDA_ERROR",
    STATUS_INTERNAL_ERROR: "FLASH3_STATUS_INTERNAL_ERROR",
}


# ---- exceptions: one class per status, each also a standard Python exception -------------------------------------

class Flash3Error(RuntimeError):
    """A libflash3 call failed. `status` is the flash3_status code; the message is flash3_last_error()."""

    def __init__(self, status, message):
        super().__init__(f"{message} [{STATUS_NAMES.get(status, status)}]")
        self.status = status


class Flash3InvalidArgumentError(Flash3Error, ValueError):
    """FLASH3_STATUS_INVALID_ARGUMENT: a shape, stride, dtype, pointer or option is wrong."""


class Flash3NotSupportedError(Flash3Error, NotImplementedError):
    """FLASH3_STATUS_NOT_SUPPORTED: a valid request that no compiled kernel (or this GPU) serves."""


class Flash3NoDeviceError(Flash3Error):
    """FLASH3_STATUS_NO_DEVICE: no usable CUDA device."""


class Flash3CudaError(Flash3Error):
    """FLASH3_STATUS_CUDA_ERROR: a CUDA runtime call inside libflash3 failed."""


_ERROR_CLASSES = {
    STATUS_INVALID_ARGUMENT: Flash3InvalidArgumentError,
    STATUS_NOT_SUPPORTED: Flash3NotSupportedError,
    STATUS_NO_DEVICE: Flash3NoDeviceError,
    STATUS_CUDA_ERROR: Flash3CudaError,
}


class LibraryNotFoundError(OSError):
    pass


# ---- the ctypes mirror (field order and types exactly as in flash3_c.h) -------------------------------------------

class Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.c_int64 * MAX_RANK),
        ("stride", ctypes.c_int64 * MAX_RANK),
    ]


_TENSOR_FIELDS = ("q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv")
_DESCALE_FIELDS = ("q_descale", "k_descale", "v_descale")


class Params(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t)] + [(n, Tensor) for n in _TENSOR_FIELDS] + [
        ("cu_seqlens_q", ctypes.c_void_p),
        ("cu_seqlens_k", ctypes.c_void_p),
        ("seqused_q", ctypes.c_void_p),
        ("seqused_k", ctypes.c_void_p),
        ("varlen_batch", ctypes.c_int32),
        ("max_seqlen_q", ctypes.c_int32),
        ("max_seqlen_k", ctypes.c_int32),
        ("softmax_scale", ctypes.c_float),
        ("causal", ctypes.c_int32),
        ("window_left", ctypes.c_int32),
        ("window_right", ctypes.c_int32),
        ("softcap", ctypes.c_float),
        ("deterministic", ctypes.c_int32),
        ("stream", ctypes.c_void_p),
        ("workspace", ctypes.c_void_p),
        ("workspace_bytes", ctypes.c_int64),
        # appended in C API version 2
    ] + [(n, Tensor) for n in _DESCALE_FIELDS]


PARAMS_SIZE = ctypes.sizeof(Params)


def _offset(name):
    return getattr(Params, name).offset


# Hot-path packers, at offsets read from the ctypes mirror (so the two mirrors cannot disagree).
_TENSOR_PACK = struct.Struct("<Qii5q5q")  # data, dtype, rank, shape[5], stride[5]  (96 bytes)
assert _TENSOR_PACK.size == ctypes.sizeof(Tensor)
_TENSOR_OFFSETS = {n: _offset(n) for n in _TENSOR_FIELDS + _DESCALE_FIELDS}
# From cu_seqlens_q to workspace_bytes: 4 pointers, 3 int32, float, 3 int32, float, int32, [pad], 2 pointers, int64.
_SCALARS_FIRST = "cu_seqlens_q"
_SCALARS_LAST = "workspace_bytes"


def _scalar_format():
    fmt = "<"
    pos = _offset(_SCALARS_FIRST)
    codes = {ctypes.c_void_p: "Q", ctypes.c_int32: "i", ctypes.c_float: "f", ctypes.c_int64: "q"}
    started = False
    for name, ctype in Params._fields_:
        if name == _SCALARS_FIRST:
            started = True
        if not started:
            continue
        off = _offset(name)
        fmt += "x" * (off - pos)
        fmt += codes[ctype]
        pos = off + ctypes.sizeof(ctype)
        if name == _SCALARS_LAST:
            break
    return struct.Struct(fmt)


_SCALAR_PACK = _scalar_format()
_SCALAR_OFFSET = _offset(_SCALARS_FIRST)
_HEADER_PACK = struct.Struct("<Q")
_ZEROS = (0,) * MAX_RANK


def pack_tensor(buf, field, data_ptr, dtype, shape, strides):
    """Writes one flash3_tensor. shape/strides are sequences of ints (rank = len(shape) <= MAX_RANK)."""
    rank = len(shape)
    pad = _ZEROS[rank:]
    _TENSOR_PACK.pack_into(buf, _TENSOR_OFFSETS[field], data_ptr, dtype, rank, *shape, *pad, *strides, *pad)


def new_params(*, cu_seqlens_q=0, cu_seqlens_k=0, seqused_q=0, seqused_k=0, varlen_batch=0, max_seqlen_q=0,
               max_seqlen_k=0, softmax_scale=0.0, causal=False, window_left=-1, window_right=-1, softcap=0.0,
               deterministic=False, stream=0, workspace=0, workspace_bytes=0):
    """A zeroed flash3_attention_params buffer (tensors "not given") with its scalar fields set. Pointers are ints."""
    buf = ctypes.create_string_buffer(PARAMS_SIZE)
    _HEADER_PACK.pack_into(buf, 0, PARAMS_SIZE)
    _SCALAR_PACK.pack_into(buf, _SCALAR_OFFSET, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, varlen_batch,
                           max_seqlen_q, max_seqlen_k, softmax_scale, int(causal), window_left, window_right, softcap,
                           int(deterministic), stream, workspace, workspace_bytes)
    return buf


def _tensor_format(rank):
    """struct format of one flash3_tensor of the given rank (unused shape/stride slots left as zero bytes)."""
    if rank == 0:
        return f"{_TENSOR_PACK.size}x"
    pad = (MAX_RANK - rank) * 8
    gap = f"{pad}x" if pad else ""
    return f"Qii{rank}q{gap}{rank}q{gap}"


_FORWARD_PACKERS = {}


def forward_packer(ranks):
    """One struct.Struct that fills a whole forward params struct in one pack_into, from offset 0: struct_size;
    q, k, v, out, lse with the given ranks (a 5-tuple; lse 0 = not given); dout..dv left zero; then the scalar block
    (cu_seqlens_q ... workspace_bytes, as new_params packs it). Descales are packed separately when given."""
    packer = _FORWARD_PACKERS.get(ranks)
    if packer is None:
        if any(r > MAX_RANK for r in ranks):
            raise ValueError(f"flash3: tensors of rank > {MAX_RANK} cannot be described to libflash3 (ranks {ranks})")
        fmt = "<Q" + "".join(_tensor_format(r) for r in ranks)
        fmt += f"{_SCALAR_OFFSET - _offset('dout')}x" + _SCALAR_PACK.format.lstrip("<")
        packer = struct.Struct(fmt)
        if _offset("dout") != 8 + 5 * _TENSOR_PACK.size or packer.size != _offset("workspace_bytes") + 8:
            raise AssertionError("flash3._lib: forward packer does not match the params layout")
        _FORWARD_PACKERS[ranks] = packer
    return packer


_WORKSPACE_OFFSET = _offset("workspace")
_WORKSPACE_PACK = struct.Struct("<Qq")  # workspace, workspace_bytes (adjacent)
assert _offset("workspace_bytes") == _WORKSPACE_OFFSET + 8


_STREAM_OFFSET = _offset("stream")
_PTR_PACK = struct.Struct("<Q")


def set_stream(buf, stream):
    _PTR_PACK.pack_into(buf, _STREAM_OFFSET, stream)


def set_workspace(buf, ptr, nbytes):
    _WORKSPACE_PACK.pack_into(buf, _WORKSPACE_OFFSET, ptr, nbytes)


# ---- loading ------------------------------------------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


def candidate_paths():
    """Where the library is looked for, in order (the first that exists is loaded)."""
    env = os.environ.get("FLASH3_LIBRARY")
    if env:
        return [env]
    paths = sorted(glob.glob(os.path.join(_HERE, "lib", "libflash3.so*")))
    # A source checkout: python/flash3/_lib.py -> <repo>/build/*/libflash3.so (the newest build).
    repo = os.path.dirname(os.path.dirname(_HERE))
    built = [p for p in glob.glob(os.path.join(repo, "build", "*", "libflash3.so")) if os.path.isfile(p)]
    paths += sorted(built, key=os.path.getmtime, reverse=True)
    return paths


class Library:
    """The loaded libflash3.so with argtypes/restype set. Use `get()`, not this constructor."""

    def __init__(self, path):
        self.path = path
        lib = ctypes.CDLL(path)
        vp = ctypes.c_void_p
        i64p = ctypes.POINTER(ctypes.c_int64)
        sig = {
            "flash3_attention_params_init": (None, [vp]),
            "flash3_forward": (ctypes.c_int, [vp]),
            "flash3_forward_workspace_size": (ctypes.c_int, [vp, i64p]),
            "flash3_backward": (ctypes.c_int, [vp]),
            "flash3_backward_workspace_size": (ctypes.c_int, [vp, i64p]),
            "flash3_validate_forward": (ctypes.c_int, [vp, ctypes.c_int32]),
            "flash3_validate_backward": (ctypes.c_int, [vp, ctypes.c_int32]),
            "flash3_last_error": (ctypes.c_char_p, []),
            "flash3_status_name": (ctypes.c_char_p, [ctypes.c_int]),
            "flash3_version": (ctypes.c_char_p, []),
            "flash3_c_api_version": (ctypes.c_int32, []),
            "flash3_kernel_list": (ctypes.c_char_p, []),
        }
        for name, (restype, argtypes) in sig.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:
                raise OSError(f"{path} does not export {name}: not a libflash3 of C API version "
                              f"{C_API_VERSION}") from None
            fn.restype = restype
            fn.argtypes = argtypes
        self.lib = lib
        self.version = lib.flash3_version().decode()
        self.api_version = lib.flash3_c_api_version()
        if self.api_version < C_API_VERSION:
            raise OSError(f"{path}: C API version {self.api_version}, this package needs {C_API_VERSION} or newer")
        # The library's own idea of the struct must cover ours (fields are only ever appended).
        probe = Params()
        lib.flash3_attention_params_init(ctypes.addressof(probe))
        if probe.struct_size != PARAMS_SIZE or probe.window_left != -1 or probe.window_right != -1:
            raise OSError(f"{path}: flash3_attention_params_init gives struct_size {probe.struct_size} and window "
                          f"({probe.window_left}, {probe.window_right}); this package's mirror is {PARAMS_SIZE} "
                          "bytes with window (-1, -1): the package and the library do not match")
        # Bound functions, looked up once (attribute lookups on CDLL objects are not free).
        self._forward = lib.flash3_forward
        self._forward_ws = lib.flash3_forward_workspace_size
        self._backward = lib.flash3_backward
        self._backward_ws = lib.flash3_backward_workspace_size

    def error(self, status):
        msg = self.lib.flash3_last_error().decode(errors="replace")
        return _ERROR_CLASSES.get(status, Flash3Error)(status, msg)

    def _check(self, status):
        if status != STATUS_SUCCESS:
            raise self.error(status)

    def forward_workspace_size(self, buf):
        n = ctypes.c_int64(0)
        self._check(self._forward_ws(ctypes.addressof(buf), ctypes.byref(n)))
        return n.value

    def forward(self, buf):
        self._check(self._forward(ctypes.addressof(buf)))

    @property
    def forward_status(self):
        """flash3_forward itself: takes the params struct's address, returns the status (no exception)."""
        return self._forward

    def backward_workspace_size(self, buf):
        n = ctypes.c_int64(0)
        self._check(self._backward_ws(ctypes.addressof(buf), ctypes.byref(n)))
        return n.value

    def backward(self, buf):
        self._check(self._backward(ctypes.addressof(buf)))

    def validate_forward(self, buf, arch=0):
        self._check(self.lib.flash3_validate_forward(ctypes.addressof(buf), arch))

    def validate_backward(self, buf, arch=0):
        self._check(self.lib.flash3_validate_backward(ctypes.addressof(buf), arch))

    def kernel_list(self):
        return [line for line in self.lib.flash3_kernel_list().decode().splitlines() if line]


_lock = threading.Lock()
_library = None


def get():
    """The process-wide Library, loaded on first use. Raises LibraryNotFoundError with the places searched."""
    global _library
    lib = _library
    if lib is not None:
        return lib
    with _lock:
        if _library is None:
            paths = candidate_paths()
            existing = [p for p in paths if os.path.isfile(p)]
            if not existing:
                raise LibraryNotFoundError(
                    "libflash3.so not found (looked at: " + (", ".join(paths) or "flash3/lib/, build/*/") + "). "
                    "Install the package with `pip install .` (builds it with CMake), or point FLASH3_LIBRARY at a "
                    "built libflash3.so")
            _library = Library(existing[0])
        return _library
