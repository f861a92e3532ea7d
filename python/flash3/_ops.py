"""The torch.library ops: flash3::fwd and flash3::bwd, their fake (meta) implementations and the autograd formula.

The public functions in flash_attn_interface.py check arguments first. The implementations copy inputs whose layout
flash3 cannot read in place, allocate outputs and the device workspace with torch's allocator, and call libflash3 on
the current stream of the tensors' device. flash3 itself never allocates, so a call can be captured in
a CUDA graph; the fake implementations compute shapes only, so torch.compile traces a model through them.
"""
import ctypes
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _lib

_TORCH_DTYPES = {
    torch.float16: _lib.DTYPE_FLOAT16,
    torch.bfloat16: _lib.DTYPE_BFLOAT16,
    torch.float32: _lib.DTYPE_FLOAT32,
    torch.int32: _lib.DTYPE_INT32,
}
if hasattr(torch, "float8_e4m3fn"):
    _TORCH_DTYPES[torch.float8_e4m3fn] = _lib.DTYPE_FLOAT8_E4M3

_TENSOR_PACK = _lib._TENSOR_PACK
_OFFSETS = _lib._TENSOR_OFFSETS
_ZEROS = (0,) * _lib.MAX_RANK
# 16 bytes in elements, per dtype: flash3 reads q, k, v, out and dout with TMA, which needs 16-byte strides.
_UNIT16 = {dt: 16 // torch.empty(0, dtype=dt).element_size() for dt in _TORCH_DTYPES}


def _code(t):
    """flash3_dtype of a tensor; -1 (which libflash3 rejects, naming the tensor) for dtypes it has no code for."""
    return _TORCH_DTYPES.get(t.dtype, -1)


def _put(buf, field, t):
    """Packs a tensor flash3 only writes (or an optional one, None = not given) into the params buffer."""
    if t is not None:
        shape = t.shape
        pad = _ZEROS[len(shape):]
        _TENSOR_PACK.pack_into(buf, _OFFSETS[field], t.data_ptr(), _code(t), len(shape), *shape, *pad, *t.stride(),
                               *pad)


def _readable(t):
    """(tensor, data pointer, strides) of an input as flash3 will read it: t itself, or a contiguous copy when flash3
    cannot read t in place (last dim not contiguous, a stride or the start address not a multiple of 16 bytes: the
    library's own rule). The caller keeps the returned tensor alive until the launch is queued (a temporary freed
    earlier could be handed to a later allocation of the same call)."""
    strides = t.stride()
    ptr = t.data_ptr()
    unit = _UNIT16.get(t.dtype, 1)
    ok = strides[-1] == 1 and ptr % 16 == 0
    if ok:
        for st in strides[:-1]:
            if st % unit:
                ok = False
                break
    if not ok:
        t = t.clone(memory_format=torch.contiguous_format)
        strides = t.stride()
        ptr = t.data_ptr()
    return t, ptr, strides


def _put_input(buf, field, t):
    """Packs an input (copied first if flash3 cannot read it in place, see _readable); returns what was packed."""
    t, ptr, strides = _readable(t)
    shape = t.shape
    pad = _ZEROS[len(shape):]
    _TENSOR_PACK.pack_into(buf, _OFFSETS[field], ptr, _code(t), len(shape), *shape, *pad, *strides, *pad)
    return t


def _ptr(t):
    return 0 if t is None else t.data_ptr()


# Per device index: None when flash3 can run there, else the reason (checked once; before any launch).
_arch_ok = {}


def _check_arch(idx, device):
    major, minor = torch.cuda.get_device_capability(idx)
    reason = None
    if (major, minor) != (9, 0):
        reason = (f"flash3 runs on sm_90 GPUs (H100/H200) only; {device} is {torch.cuda.get_device_name(idx)} "
                  f"(sm_{major}{minor})")
    _arch_ok[idx] = reason
    return reason


def _device_index(device):
    idx = device.index
    if idx is None:
        idx = torch.cuda.current_device()
    reason = _arch_ok.get(idx, False)
    if reason is False:
        reason = _check_arch(idx, device)
    if reason is not None:
        raise ValueError(reason)
    return idx


_get_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device
_set_device = getattr(torch._C, "_cuda_setDevice", None) or torch.cuda.set_device
if hasattr(torch._C, "_cuda_getCurrentRawStream"):
    _stream_ptr = torch._C._cuda_getCurrentRawStream
else:  # pragma: no cover - older torch
    def _stream_ptr(idx):
        return torch.cuda.current_stream(idx).cuda_stream


_is_capturing = getattr(torch._C, "_cuda_isCurrentStreamCapturing", None) or torch.cuda.is_current_stream_capturing
# Small workspaces (the forward's scheduler counter and softmax repair flag), kept per (device, stream) between eager
# calls: work on one stream runs in order and flash3 resets what it uses, so reuse is safe and saves an allocation
# per call. Never
# used while the stream is being captured (a graph gets its own allocation from the graph's pool).
_SMALL_WORKSPACE = 4096
_workspaces = {}  # (device index, stream) -> (tensor, data pointer)


def _small_workspace(idx, stream, device):
    key = (idx, stream)
    entry = _workspaces.get(key)
    if entry is None:
        ws = torch.empty(_SMALL_WORKSPACE, dtype=torch.uint8, device=device)
        entry = _workspaces[key] = (ws, ws.data_ptr())
    return entry


def _call(lib_fn, size_fn, buf, idx, device, try_small_workspace=None):
    """Sets the stream, provides the workspace flash3 asks for and calls lib_fn, with idx as the current CUDA device
    (libflash3 launches on the current device, which must be the tensors' one). Workspaces come from torch's
    caching allocator on the current stream (capturable in a CUDA graph); flash3 zeroes what it needs itself, and
    the C ABI asks nothing more of the workspace (it is not zeroed here).

    try_small_workspace: a raw C entry point returning the status (the forward's). In eager mode it is first called
    with the per-stream small workspace, which covers every forward's needs today (256 bytes), so the call
    needs no workspace-size query; any failure falls back to the query, which re-validates and raises the library's
    error if the arguments are wrong."""
    prev = _get_device()
    if prev != idx:
        _set_device(idx)
    try:
        stream = _stream_ptr(idx)
        _lib.set_stream(buf, stream)
        if try_small_workspace is not None and not _is_capturing():
            _lib.set_workspace(buf, _small_workspace(idx, stream, device)[1], _SMALL_WORKSPACE)
            if try_small_workspace(ctypes.addressof(buf)) == _lib.STATUS_SUCCESS:
                return
        nbytes = size_fn(buf)
        ws = None
        if nbytes > 0:
            if nbytes <= _SMALL_WORKSPACE and not _is_capturing():
                ws, ptr = _small_workspace(idx, stream, device)
            else:
                ws = torch.empty(nbytes, dtype=torch.uint8, device=device)
                ptr = ws.data_ptr()
            _lib.set_workspace(buf, ptr, nbytes)
        lib_fn(buf)
    finally:
        if prev != idx:
            _set_device(prev)


def _varlen_batch(cu_seqlens_q):
    return 0 if cu_seqlens_q is None else cu_seqlens_q.shape[0] - 1


def _out_shapes(q, v, cu_seqlens_q):
    """(out shape, lse shape) of a forward: out (..., h, dv); lse (b, h, sq), or (h, total_q) for varlen."""
    if cu_seqlens_q is None:
        b, sq, h = q.shape[0], q.shape[1], q.shape[2]
        return (b, sq, h, v.shape[-1]), (b, h, sq)
    total_q, h = q.shape[0], q.shape[1]
    return (total_q, h, v.shape[-1]), (h, total_q)


_HALF = (torch.float16, torch.bfloat16)


def _out_dtype(q):
    # FP8 inputs give bf16 outputs (FA3's convention).
    return q.dtype if q.dtype in _HALF else torch.bfloat16


# ---- forward ------------------------------------------------------------------------------------------------------

def fwd_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
             causal, window_left, window_right, softcap, q_descale, k_descale, v_descale, deterministic,
             need_lse=True):
    """The real forward (flash3::fwd's CUDA implementation, also called directly by the eager fast path). With
    need_lse=False (inference that does not return it) the LSE is neither allocated nor written: (out, None)."""
    device = q.device
    idx = _device_index(device)
    lib = _lib.get()
    out_shape, lse_shape = _out_shapes(q, v, cu_seqlens_q)
    if q.dtype in _HALF and out_shape == q.shape and q.is_contiguous():
        out = torch.empty_like(q)  # the cheapest allocation call (contiguous, like q)
    else:
        out = torch.empty(out_shape, dtype=_out_dtype(q), device=device)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=device) if need_lse else None
    # The whole struct in one pack_into (this runs on every call; see _lib.forward_packer).
    q, q_ptr, q_strides = _readable(q)
    k, k_ptr, k_strides = _readable(k)
    v, v_ptr, v_strides = _readable(v)
    q_shape, k_shape, v_shape = q.shape, k.shape, v.shape
    values = [_lib.PARAMS_SIZE, q_ptr, _code(q), len(q_shape), *q_shape, *q_strides,
              k_ptr, _code(k), len(k_shape), *k_shape, *k_strides, v_ptr, _code(v), len(v_shape), *v_shape, *v_strides,
              out.data_ptr(), _code(out), len(out_shape), *out_shape, *out.stride()]
    if lse is not None:
        values += (lse.data_ptr(), _lib.DTYPE_FLOAT32, len(lse_shape), *lse_shape, *lse.stride())
    values += (_ptr(cu_seqlens_q), _ptr(cu_seqlens_k), _ptr(seqused_q), _ptr(seqused_k), _varlen_batch(cu_seqlens_q),
               max_seqlen_q, max_seqlen_k, softmax_scale, int(causal), window_left, window_right, softcap, 0, 0, 0, 0)
    ranks = (len(q_shape), len(k_shape), len(v_shape), len(out_shape), 0 if lse is None else len(lse_shape))
    buf = ctypes.create_string_buffer(_lib.PARAMS_SIZE)
    _lib.forward_packer(ranks).pack_into(buf, 0, *values)
    if q_descale is not None or k_descale is not None or v_descale is not None:
        _put(buf, "q_descale", q_descale)
        _put(buf, "k_descale", k_descale)
        _put(buf, "v_descale", v_descale)
    _call(lib.forward, lib.forward_workspace_size, buf, idx, device, lib.forward_status)
    del q, k, v  # (held until here: possibly copies made above)
    return out, lse


@torch.library.custom_op("flash3::fwd", mutates_args=(), device_types="cuda")
def fwd(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor],
        seqused_q: Optional[Tensor], seqused_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int,
        softmax_scale: float, causal: bool, window_left: int, window_right: int, softcap: float,
        q_descale: Optional[Tensor], k_descale: Optional[Tensor], v_descale: Optional[Tensor],
        deterministic: bool) -> Tuple[Tensor, Tensor]:
    """out, softmax_lse = attention(q, k, v). `deterministic` is stored for the backward only."""
    return fwd_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k,
                    softmax_scale, causal, window_left, window_right, softcap, q_descale, k_descale, v_descale,
                    deterministic)


@fwd.register_fake
def _fwd_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
              causal, window_left, window_right, softcap, q_descale, k_descale, v_descale, deterministic):
    out_shape, lse_shape = _out_shapes(q, v, cu_seqlens_q)
    out = q.new_empty(out_shape, dtype=_out_dtype(q))
    lse = q.new_empty(lse_shape, dtype=torch.float32)
    return out, lse


# ---- backward -----------------------------------------------------------------------------------------------------

def bwd_impl(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
             max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, deterministic):
    """The real backward (flash3::bwd's CUDA implementation, also called directly by the eager fast path)."""
    device = q.device
    idx = _device_index(device)
    lib = _lib.get()
    dq = torch.empty(q.shape, dtype=q.dtype, device=device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=device)
    buf = _lib.new_params(
        cu_seqlens_q=_ptr(cu_seqlens_q), cu_seqlens_k=_ptr(cu_seqlens_k), seqused_q=_ptr(seqused_q),
        seqused_k=_ptr(seqused_k), varlen_batch=_varlen_batch(cu_seqlens_q), max_seqlen_q=max_seqlen_q,
        max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal, window_left=window_left,
        window_right=window_right, softcap=softcap, deterministic=deterministic)
    kept = [_put_input(buf, name, t) for name, t in (("q", q), ("k", k), ("v", v), ("out", out), ("dout", dout))]
    _put(buf, "lse", softmax_lse)
    _put(buf, "dq", dq)
    _put(buf, "dk", dk)
    _put(buf, "dv", dv)
    # The workspace is not zeroed here: the C ABI asks only for that many bytes of device scratch.
    _call(lib.backward, lib.backward_workspace_size, buf, idx, device)
    del kept
    return dq, dk, dv


@torch.library.custom_op("flash3::bwd", mutates_args=(), device_types="cuda")
def bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, softmax_lse: Tensor,
        cu_seqlens_q: Optional[Tensor], cu_seqlens_k: Optional[Tensor], seqused_q: Optional[Tensor],
        seqused_k: Optional[Tensor], max_seqlen_q: int, max_seqlen_k: int, softmax_scale: float, causal: bool,
        window_left: int, window_right: int, softcap: float, deterministic: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv of attention(q, k, v) given dout and the forward's out and softmax_lse."""
    return bwd_impl(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
                    max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, deterministic)


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, softmax_lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q,
              max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, deterministic):
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        torch.empty_like(k, memory_format=torch.contiguous_format), \
        torch.empty_like(v, memory_format=torch.contiguous_format)


# ---- autograd -----------------------------------------------------------------------------------------------------

def _setup_context(ctx, inputs, output):
    (q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
     window_left, window_right, softcap, q_descale, k_descale, v_descale, deterministic) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k)
    ctx.fp8 = q_descale is not None or k_descale is not None or v_descale is not None
    ctx.args = (max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap, deterministic)
    # The LSE is an output for inspection; no gradient flows through it (as in FA3).
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k = ctx.saved_tensors
    if ctx.fp8:
        raise NotImplementedError("flash3: no backward for FP8 inputs (q_descale/k_descale/v_descale given)")
    dq, dk, dv = torch.ops.flash3.bwd(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q,
                                      seqused_k, *ctx.args)
    return (dq, dk, dv) + (None,) * 15


fwd.register_autograd(_backward, setup_context=_setup_context)


# ---- the eager fast path ------------------------------------------------------------------------------------------
# A torch.library custom op costs tens of microseconds per call in eager mode (the dispatcher calls back into Python,
# and register_autograd adds another layer), more than the whole of SDPA's call. In plain eager mode, with ordinary
# CUDA tensors and no mode or transform that must see the op, the public functions call the same implementations
# through this autograd.Function instead. Everything else (torch.compile, export, FakeTensor/meta, dispatch and
# function modes, functorch transforms, tensor subclasses) goes through flash3::fwd / flash3::bwd.

class _Attention(torch.autograd.Function):
    """apply(q, k, v, args): args is the tuple of flash3::fwd's other arguments, passed as one constant so that
    autograd's per-argument handling of apply() (in Python and in C++) sees 4 arguments instead of 18."""

    @staticmethod
    def forward(ctx, q, k, v, args):
        out, lse = fwd_impl(q, k, v, *args)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = args
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        (cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
         window_left, window_right, softcap, q_descale, k_descale, v_descale, deterministic) = ctx.args
        if q_descale is not None or k_descale is not None or v_descale is not None:
            raise NotImplementedError("flash3: no backward for FP8 inputs (q_descale/k_descale/v_descale given)")
        dq, dk, dv = bwd_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k,
                              max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap,
                              deterministic)
        return dq, dk, dv, None


# Set to False to route every call through the custom ops (e.g. to compare the two paths).
FAST_PATH = True

_is_compiling = getattr(torch.compiler, "is_compiling", None) or (lambda: False)
_tf_mode = getattr(torch._C, "_is_torch_function_mode_enabled", None) or (lambda: True)
_dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", None) or (lambda: 1)
try:
    _functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
except AttributeError:  # pragma: no cover
    def _functorch_wrapped(t):
        return True
_Tensor = torch.Tensor
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", None)
_grad_enabled = torch.is_grad_enabled
if _functorch_active is not None:
    # autograd.Function.apply's Python wrapper, for a Function without setup_context while no functorch transform
    # is active, only unwraps dead functorch wrappers (there are none: no input is functorch-wrapped, checked in
    # attention()) and calls the C++ apply of its base class. Calling that directly saves ~3 us per call.
    _attention_apply = super(torch.autograd.Function, _Attention).apply
else:  # pragma: no cover - a torch without the query: the public apply, transforms go to the custom op
    _attention_apply = _Attention.apply

    def _functorch_active():
        return False


def attention(q, k, v, *args, need_lse=True):
    """flash3::fwd with autograd: the custom op, or in plain eager mode the same code without the dispatcher.
    need_lse=False lets the eager inference path skip the LSE (the result's lse is then None). Under functorch
    transforms, or with functorch-wrapped inputs, the custom op runs."""
    if (FAST_PATH and type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and q.is_cuda
            and not _is_compiling() and not _tf_mode() and _dispatch_depth() == 0
            and not (_functorch_wrapped(q) or _functorch_wrapped(k) or _functorch_wrapped(v))):
        if not (_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
            return fwd_impl(q, k, v, *args, need_lse=need_lse)
        if not _functorch_active():
            return _attention_apply(q, k, v, args)
    return fwd(q, k, v, *args)
