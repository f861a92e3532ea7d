"""The torch.library ops: flash3::fwd and flash3::bwd, their fake (meta) implementations and the autograd formula.

The ops take tensors whose layout flash3 accepts (the public functions in flash_attn_interface.py fix layouts and
check arguments first) and allocate their outputs and the device workspace with torch's allocator, then call
libflash3 on the current stream of the tensors' device. flash3 itself never allocates, so a call can be captured in
a CUDA graph; the fake implementations compute shapes only, so torch.compile traces a model through them.
"""
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

_pack_tensor = _lib.pack_tensor


def _put(buf, field, t):
    if t is not None:
        _pack_tensor(buf, field, t.data_ptr(), _TORCH_DTYPES[t.dtype], t.shape, t.stride())


def _ptr(t):
    return 0 if t is None else t.data_ptr()


# Per device index: None when flash3 can run there, else the reason (checked once; before any launch).
_arch_ok = {}


def _check_device(device):
    idx = device.index
    if idx is None:
        idx = torch.cuda.current_device()
    reason = _arch_ok.get(idx, False)
    if reason is False:
        major, minor = torch.cuda.get_device_capability(idx)
        reason = None
        if (major, minor) != (9, 0):
            reason = (f"flash3 runs on sm_90 GPUs (H100/H200) only; {device} is "
                      f"{torch.cuda.get_device_name(idx)} (sm_{major}{minor})")
        _arch_ok[idx] = reason
    if reason is not None:
        raise ValueError(reason)
    return idx


if hasattr(torch._C, "_cuda_getCurrentRawStream"):
    def _stream_ptr(idx):
        return torch._C._cuda_getCurrentRawStream(idx)
else:  # pragma: no cover - older torch
    def _stream_ptr(idx):
        return torch.cuda.current_stream(idx).cuda_stream


class _DeviceGuard:
    """torch.cuda.device(idx), skipped when idx already is the current device (the common case, and cheaper)."""

    __slots__ = ("idx", "prev")

    def __init__(self, idx):
        self.idx = idx
        self.prev = None

    def __enter__(self):
        cur = torch.cuda.current_device()
        if cur != self.idx:
            self.prev = cur
            torch.cuda.set_device(self.idx)

    def __exit__(self, *exc):
        if self.prev is not None:
            torch.cuda.set_device(self.prev)
        return False


def _varlen_batch(cu_seqlens_q):
    return 0 if cu_seqlens_q is None else cu_seqlens_q.shape[0] - 1


def _out_shapes(q, v, cu_seqlens_q):
    """(out shape, lse shape) of a forward: out (..., h, dv); lse (b, h, sq), or (h, total_q) for varlen."""
    if cu_seqlens_q is None:
        b, sq, h = q.shape[0], q.shape[1], q.shape[2]
        return (b, sq, h, v.shape[-1]), (b, h, sq)
    total_q, h = q.shape[0], q.shape[1]
    return (total_q, h, v.shape[-1]), (h, total_q)


def _out_dtype(q):
    # FP8 inputs give bf16 outputs (FA3's convention).
    return torch.bfloat16 if q.dtype not in (torch.float16, torch.bfloat16) else q.dtype


# ---- forward ------------------------------------------------------------------------------------------------------

def fwd_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
             causal, window_left, window_right, softcap, q_descale, k_descale, v_descale, deterministic):
    """The real forward (flash3::fwd's CUDA implementation, also called directly by the eager fast path)."""
    idx = _check_device(q.device)
    out_shape, lse_shape = _out_shapes(q, v, cu_seqlens_q)
    out = torch.empty(out_shape, dtype=_out_dtype(q), device=q.device)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    lib = _lib.get()
    # Copies where flash3 cannot read a tensor in place; held in locals until the launch is queued (a temporary
    # freed earlier could be handed to the workspace allocation below).
    q, k, v = fix_layout(q), fix_layout(k), fix_layout(v)
    with _DeviceGuard(idx):
        buf = _lib.new_params(
            cu_seqlens_q=_ptr(cu_seqlens_q), cu_seqlens_k=_ptr(cu_seqlens_k), seqused_q=_ptr(seqused_q),
            seqused_k=_ptr(seqused_k), varlen_batch=_varlen_batch(cu_seqlens_q), max_seqlen_q=max_seqlen_q,
            max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal, window_left=window_left,
            window_right=window_right, softcap=softcap, deterministic=False, stream=_stream_ptr(idx))
        _put(buf, "q", q)
        _put(buf, "k", k)
        _put(buf, "v", v)
        _put(buf, "out", out)
        _put(buf, "lse", lse)
        _put(buf, "q_descale", q_descale)
        _put(buf, "k_descale", k_descale)
        _put(buf, "v_descale", v_descale)
        nbytes = lib.forward_workspace_size(buf)
        if nbytes > 0:
            # Allocated by torch's caching allocator on the current stream (capturable); flash3 zeroes what it uses.
            ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
            _lib.set_workspace(buf, ws.data_ptr(), nbytes)
        lib.forward(buf)
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
    idx = _check_device(q.device)
    dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    lib = _lib.get()
    q, k, v, out, dout = fix_layout(q), fix_layout(k), fix_layout(v), fix_layout(out), fix_layout(dout)
    with _DeviceGuard(idx):
        buf = _lib.new_params(
            cu_seqlens_q=_ptr(cu_seqlens_q), cu_seqlens_k=_ptr(cu_seqlens_k), seqused_q=_ptr(seqused_q),
            seqused_k=_ptr(seqused_k), varlen_batch=_varlen_batch(cu_seqlens_q), max_seqlen_q=max_seqlen_q,
            max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal, window_left=window_left,
            window_right=window_right, softcap=softcap, deterministic=deterministic, stream=_stream_ptr(idx))
        _put(buf, "q", q)
        _put(buf, "k", k)
        _put(buf, "v", v)
        _put(buf, "out", out)
        _put(buf, "lse", softmax_lse)
        _put(buf, "dout", dout)
        _put(buf, "dq", dq)
        _put(buf, "dk", dk)
        _put(buf, "dv", dv)
        nbytes = lib.backward_workspace_size(buf)
        if nbytes > 0:
            # Not zeroed here: the C ABI (like the forward's) asks only for nbytes of device scratch.
            ws = torch.empty(nbytes, dtype=torch.uint8, device=q.device)
            _lib.set_workspace(buf, ws.data_ptr(), nbytes)
        lib.backward(buf)
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


# ---- layouts ------------------------------------------------------------------------------------------------------

def needs_copy(t):
    """True when flash3 cannot read t in place: last dim not contiguous, or (TMA) a stride or the start address that
    is not a multiple of 16 bytes. Called inside the real implementations only (they are opaque to torch.compile),
    so the check may read the data pointer."""
    if t.stride(-1) != 1 and t.shape[-1] != 1:
        return True
    unit = 16 // t.element_size()
    for i in range(t.dim() - 1):
        if t.shape[i] != 1 and t.stride(i) % unit != 0:
            return True
    return t.data_ptr() % 16 != 0


def fix_layout(t):
    return t.contiguous() if t is not None and needs_copy(t) else t


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


# ---- the eager fast path ----------------------------------------------------------------------------------------------
# A torch.library custom op costs tens of microseconds per call in eager mode (the dispatcher calls back into Python,
# and register_autograd adds another layer), more than the whole of SDPA's call. In plain eager mode, with ordinary
# CUDA tensors and no mode or transform that must see the op, the public functions call the same implementations
# through this autograd.Function instead. Everything else (torch.compile, export, FakeTensor/meta, dispatch and
# function modes, functorch transforms, tensor subclasses) goes through flash3::fwd / flash3::bwd.

class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k,
                softmax_scale, causal, window_left, window_right, softcap, q_descale, k_descale, v_descale,
                deterministic):
        out, lse = fwd_impl(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k,
                            softmax_scale, causal, window_left, window_right, softcap, q_descale, k_descale,
                            v_descale, deterministic)
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k)
        ctx.fp8 = q_descale is not None or k_descale is not None or v_descale is not None
        ctx.args = (max_seqlen_q, max_seqlen_k, softmax_scale, causal, window_left, window_right, softcap,
                    deterministic)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k = ctx.saved_tensors
        if ctx.fp8:
            raise NotImplementedError("flash3: no backward for FP8 inputs (q_descale/k_descale/v_descale given)")
        dq, dk, dv = bwd_impl(dout, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, *ctx.args)
        return (dq, dk, dv) + (None,) * 15


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


def attention(q, k, v, *args):
    """flash3::fwd with autograd: the custom op, or in plain eager mode the same code without the dispatcher."""
    if (FAST_PATH and type(q) is _Tensor and type(k) is _Tensor and type(v) is _Tensor and q.is_cuda
            and not _is_compiling() and not _tf_mode() and _dispatch_depth() == 0
            and not _functorch_wrapped(q)):
        if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
            return _Attention.apply(q, k, v, *args)
        return fwd_impl(q, k, v, *args)
    return fwd(q, k, v, *args)
