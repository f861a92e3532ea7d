"""FA3's Python interface (the `flash_attn_interface` module), served by flash3.

Same function names, parameter names, defaults and return values as FA3, so switching is one import line:

    from flash3 import flash_attn_func            # instead of: from flash_attn_interface import flash_attn_func

Every argument is checked here, before anything runs on the GPU: a tensor on the wrong device, of the wrong dtype or
shape raises ValueError/TypeError naming it; an argument whose feature flash3 has not built yet raises
NotImplementedError naming it (nothing is silently ignored). libflash3 checks everything again and its errors map to
Flash3Error subclasses that are also ValueError (invalid argument) or NotImplementedError (not supported).
"""
import math

import torch

from . import _ops

__all__ = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_with_kvcache",
    "flash_attn_combine",
    "get_scheduler_metadata",
]

_HALF = (torch.float16, torch.bfloat16)
_FP8 = tuple(d for d in (getattr(torch, "float8_e4m3fn", None),) if d is not None)


def _not_built(feature, arg):
    return NotImplementedError(f"flash3: {arg} ({feature}) is not supported yet; it is not built in flash3")


def _check_unbuilt(qv=None, attention_chunk=0, num_splits=1, pack_gqa=None, sm_margin=0):
    if qv is not None:
        raise _not_built("the extra qv input of multi-head latent attention", "qv")
    if attention_chunk not in (0, None):
        raise _not_built("chunked attention", f"attention_chunk={attention_chunk}")
    if num_splits not in (0, 1):
        raise _not_built("split-KV", f"num_splits={num_splits}")
    if pack_gqa:
        raise _not_built("packing GQA heads into one tile", "pack_gqa=True")
    if sm_margin not in (0, None):
        raise _not_built("leaving SMs free", f"sm_margin={sm_margin}")


def _check_tensor(name, t, rank, device, dims):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"flash3: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"flash3: {name} must have {rank} dims {dims}, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"flash3: {name} is on {t.device} but q is on {device}; all tensors must be on one device")


def _explain_qkv(q, k, v, varlen):
    """The detailed checks, with messages (run when the quick test in _check_qkv does not pass)."""
    rank = 3 if varlen else 4
    lead = "(total_q, " if varlen else "(batch, seqlen_q, "
    lead_k = "(total_k, " if varlen else "(batch, seqlen_k, "
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"flash3: q must be a torch.Tensor, got {type(q).__name__}")
    device = q.device
    if device.type not in ("cuda", "meta"):
        raise ValueError(f"flash3: q is on {device}; flash3 runs on CUDA devices (an sm_90 GPU) only")
    _check_tensor("q", q, rank, device, lead + "nheads, headdim)")
    _check_tensor("k", k, rank, device, lead_k + "nheads_k, headdim)")
    _check_tensor("v", v, rank, device, lead_k + "nheads_k, headdim_v)")
    if q.dtype not in _HALF + _FP8:
        raise TypeError(f"flash3: q.dtype is {q.dtype}; expected torch.float16 or torch.bfloat16"
                        + (" (or torch.float8_e4m3fn)" if _FP8 else ""))
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"flash3: {name}.dtype is {t.dtype} but q.dtype is {q.dtype}; they must match")
    if varlen:
        if k.shape[0] != v.shape[0]:
            raise ValueError(f"flash3: k has {k.shape[0]} tokens (dim 0) but v has {v.shape[0]}")
    else:
        if k.shape[0] != q.shape[0] or v.shape[0] != q.shape[0]:
            raise ValueError(f"flash3: batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"flash3: k has seqlen {k.shape[1]} but v has {v.shape[1]}")
    h, hk = q.shape[-2], k.shape[-2]
    if v.shape[-2] != hk:
        raise ValueError(f"flash3: k has {hk} heads but v has {v.shape[-2]}")
    if hk == 0 or h % hk != 0:
        raise ValueError(f"flash3: nheads_k = {hk} must divide nheads = {h} (query heads share KV heads in groups)")
    d, dk, dv = q.shape[-1], k.shape[-1], v.shape[-1]
    if dk != d:
        raise ValueError(f"flash3: q has headdim {d} but k has {dk}; they must match")
    for name, x in (("headdim", d), ("headdim_v", dv)):
        if x <= 0 or x % 8 != 0 or x > 256:
            raise ValueError(f"flash3: {name} = {x}; flash3 supports head dims that are multiples of 8 up to 256")
    if dv != d and not (d == 192 and dv == 128):
        raise ValueError(f"flash3: headdim {d} with headdim_v {dv}: headdim_v must equal headdim, or (192, 128)")


def _check_qkv(q, k, v, varlen):
    """Raises ValueError/TypeError naming the problem. The common, valid case is decided with few attribute reads
    (this runs on every call); anything unusual goes through _explain_qkv for the message."""
    try:
        qs, ks, vs = q.shape, k.shape, v.shape
        dt = q.dtype
        # is_cuda and get_device() (ints) are cheaper than torch.device objects; meta tensors take the slow path.
        ok = (len(qs) == len(ks) == len(vs) == (3 if varlen else 4) and dt in _HALF and k.dtype == dt
              and v.dtype == dt and q.is_cuda and k.is_cuda and v.is_cuda
              and q.get_device() == k.get_device() == v.get_device())
        if ok:
            d, dv, h, hk = qs[-1], vs[-1], qs[-2], ks[-2]
            ok = (ks[-1] == d and vs[-2] == hk and hk > 0 and h % hk == 0 and 0 < d <= 256 and d % 8 == 0
                  and (dv == d or (d == 192 and dv == 128))
                  and (ks[0] == vs[0] if varlen else (ks[0] == qs[0] and vs[0] == qs[0] and ks[1] == vs[1])))
    except AttributeError:
        ok = False
    if not ok:
        _explain_qkv(q, k, v, varlen)


def _check_descale(q, q_descale, k_descale, v_descale):
    given = [(n, t) for n, t in (("q_descale", q_descale), ("k_descale", k_descale), ("v_descale", v_descale))
             if t is not None]
    if q.dtype in _HALF:
        if given:
            raise ValueError(f"flash3: {given[0][0]} is given but q.dtype is {q.dtype}; descale factors apply to "
                             "FP8 (torch.float8_e4m3fn) inputs only")
        return
    # FP8 inputs: the C library checks the descale shapes and reports NOT_SUPPORTED while the FP8 kernels are absent.
    for name, t in given:
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.device != q.device:
            raise TypeError(f"flash3: {name} must be a float32 tensor on {q.device}")


_NO_WINDOW = (-1, -1)


def _window(window_size, causal):
    default = window_size is _NO_WINDOW or (window_size.__class__ is tuple and window_size == _NO_WINDOW)
    if default and (causal is False or causal is True):
        return _NO_WINDOW  # the default, decided without the checks below
    if window_size is None:
        window_size = (-1, -1)
    try:
        left, right = window_size
        left, right = int(left), int(right)
    except (TypeError, ValueError):
        raise TypeError(f"flash3: window_size must be a pair of ints (left, right), got {window_size!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"flash3: window_size = {window_size}; each side must be >= 0, or -1 for unbounded")
    if not isinstance(causal, bool) and causal not in (0, 1):
        raise TypeError(f"flash3: causal must be a bool, got {causal!r}")
    if causal and right > 0:
        raise ValueError(f"flash3: causal=True with window_size right = {right}; causal is the window (left, 0)")
    return left, right


def _scale(softmax_scale, headdim):
    if softmax_scale is None:
        return headdim ** -0.5
    if softmax_scale.__class__ is float and 0.0 < softmax_scale < math.inf:
        return softmax_scale
    s = float(softmax_scale)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"flash3: softmax_scale = {softmax_scale}; expected a finite value > 0 (None = "
                         "headdim ** -0.5)")
    return s


def _softcap(softcap):
    if softcap.__class__ is float and softcap == 0.0:
        return 0.0
    c = float(softcap)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"flash3: softcap = {softcap}; expected a finite value >= 0 (0 = off)")
    return c


def _fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k, softmax_scale,
         causal, window, softcap, q_descale, k_descale, v_descale, deterministic, return_lse):
    out, lse = _ops.attention(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k,
                              softmax_scale, bool(causal), window[0], window[1], softcap, q_descale, k_descale,
                              v_descale, bool(deterministic), need_lse=bool(return_lse))
    return (out, lse) if return_lse else out


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                    v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                    pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    """Attention over (batch, seqlen, nheads, headdim) tensors.

    q (b, sq, h, d), k (b, sk, h_k, d), v (b, sk, h_k, dv) with h % h_k == 0 (GQA/MQA). Returns out (b, sq, h, dv),
    or (out, softmax_lse) with return_attn_probs=True (softmax_lse fp32 (b, h, sq); no gradient flows through it).
    causal aligns to the bottom-right corner; window_size=(left, right), -1 unbounded; softcap > 0 caps the scores.
    Differentiable in q, k, v (fp16/bf16); deterministic asks for a reproducible backward.
    """
    # The common call (defaults everywhere but q, k, v, causal, softmax_scale) skips the helpers: this runs on every
    # call and its host time is measured against SDPA's.
    if qv is not None or attention_chunk or pack_gqa or sm_margin or num_splits not in (0, 1):
        _check_unbuilt(qv, attention_chunk, num_splits, pack_gqa, sm_margin)
    _check_qkv(q, k, v, varlen=False)
    if q_descale is not None or k_descale is not None or v_descale is not None:
        _check_descale(q, q_descale, k_descale, v_descale)
    left, right = _window(window_size, causal)
    out, lse = _ops.attention(q, k, v, None, None, None, None, 0, 0, _scale(softmax_scale, q.shape[-1]),
                              causal is True or bool(causal), left, right, _softcap(softcap), q_descale, k_descale,
                              v_descale, deterministic is True or bool(deterministic),
                              need_lse=return_attn_probs is True or bool(return_attn_probs))
    return (out, lse) if return_attn_probs else out


def _check_cu(name, t, device, batch=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"flash3: {name} must be an int32 torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"flash3: {name}.dtype is {t.dtype}; expected torch.int32")
    if t.device != device:
        raise ValueError(f"flash3: {name} is on {t.device} but q is on {device}")
    if t.dim() != 1:
        raise ValueError(f"flash3: {name} must be 1-D, got shape {tuple(t.shape)}")
    if batch is not None and t.shape[0] != batch:
        raise ValueError(f"flash3: {name} has {t.shape[0]} entries, expected {batch} (the batch size)")
    if t.numel() > 0 and t.stride(0) != 1:
        raise ValueError(f"flash3: {name} must be contiguous")


def _check_max_seqlen(name, x):
    if isinstance(x, bool) or not isinstance(x, int):
        if isinstance(x, torch.SymInt):
            return x
        raise TypeError(f"flash3: {name} must be an int, got {type(x).__name__}")
    if x < 0 or x > 2**31 - 1:
        raise ValueError(f"flash3: {name} = {x}; expected 0 <= {name} < 2^31")
    return x


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None,
                           seqused_k=None, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None,
                           v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1,
                           pack_gqa=None, deterministic=False, sm_margin=0, return_attn_probs=False):
    """Attention over packed variable-length sequences.

    q (total_q, h, d), k (total_k, h_k, d), v (total_k, h_k, dv); cu_seqlens_q/k int32 (batch + 1,) prefix sums;
    max_seqlen_q/k ints; seqused_q/k optional int32 (batch,) (only that many tokens of each sequence are used; rows
    past them are not written). Returns out (total_q, h, dv), or (out, softmax_lse (h, total_q)).
    """
    _check_unbuilt(qv, attention_chunk, num_splits, pack_gqa, sm_margin)
    _check_qkv(q, k, v, varlen=True)
    _check_cu("cu_seqlens_q", cu_seqlens_q, q.device)
    _check_cu("cu_seqlens_k", cu_seqlens_k, q.device, cu_seqlens_q.shape[0])
    batch = cu_seqlens_q.shape[0] - 1
    if batch < 1:
        raise ValueError(f"flash3: cu_seqlens_q has {cu_seqlens_q.shape[0]} entries; expected batch + 1 >= 2")
    if seqused_q is not None:
        _check_cu("seqused_q", seqused_q, q.device, batch)
    if seqused_k is not None:
        _check_cu("seqused_k", seqused_k, q.device, batch)
    max_seqlen_q = _check_max_seqlen("max_seqlen_q", max_seqlen_q)
    max_seqlen_k = _check_max_seqlen("max_seqlen_k", max_seqlen_k)
    _check_descale(q, q_descale, k_descale, v_descale)
    window = _window(window_size, causal)
    return _fwd(q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, max_seqlen_q, max_seqlen_k,
                _scale(softmax_scale, q.shape[-1]), causal, window, _softcap(softcap), q_descale, k_descale,
                v_descale, deterministic, return_attn_probs)


def flash_attn_qkvpacked_func(qkv, softmax_scale=None, causal=False, q_descale=None, k_descale=None,
                              v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0,
                              deterministic=False, num_heads_q=None, sm_margin=0, return_attn_probs=False):
    """Self-attention over one packed tensor: qkv (b, s, 3, h, d), or (b, s, h + 2 * h_k, d) with num_heads_q = h
    for GQA. Returns out (b, s, h, d) [, softmax_lse]. The gradient arrives in qkv's layout."""
    _check_unbuilt(attention_chunk=attention_chunk, sm_margin=sm_margin)
    if not isinstance(qkv, torch.Tensor):
        raise TypeError(f"flash3: qkv must be a torch.Tensor, got {type(qkv).__name__}")
    if qkv.dim() == 5:
        if qkv.shape[2] != 3:
            raise ValueError(f"flash3: qkv (batch, seqlen, 3, nheads, headdim) has {qkv.shape[2]} in dim 2, expected 3")
        if num_heads_q is not None:
            raise ValueError("flash3: num_heads_q is for the 4-D GQA layout (batch, seqlen, nheads + 2 * nheads_k, "
                             "headdim); a 5-D qkv has no use for it")
        q, k, v = qkv.unbind(dim=2)
    elif qkv.dim() == 4:
        if num_heads_q is None:
            raise ValueError("flash3: a 4-D qkv (batch, seqlen, nheads + 2 * nheads_k, headdim) needs num_heads_q")
        total = qkv.shape[2]
        if (total - num_heads_q) <= 0 or (total - num_heads_q) % 2 != 0:
            raise ValueError(f"flash3: qkv has {total} heads in dim 2, which is not num_heads_q ({num_heads_q}) + "
                             "2 * nheads_k")
        hk = (total - num_heads_q) // 2
        q, k, v = qkv.split([num_heads_q, hk, hk], dim=2)
    else:
        raise ValueError(f"flash3: qkv must be (batch, seqlen, 3, nheads, headdim) or (batch, seqlen, nheads + 2 * "
                         f"nheads_k, headdim); got shape {tuple(qkv.shape)}")
    _check_qkv(q, k, v, varlen=False)
    _check_descale(q, q_descale, k_descale, v_descale)
    window = _window(window_size, causal)
    return _fwd(q, k, v, None, None, None, None, 0, 0, _scale(softmax_scale, q.shape[-1]), causal, window,
                _softcap(softcap), q_descale, k_descale, v_descale, deterministic, return_attn_probs)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None,
                            cu_seqlens_q=None, cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None,
                            q_descale=None, k_descale=None, v_descale=None, softmax_scale=None, causal=False,
                            window_size=(-1, -1), attention_chunk=0, softcap=0.0, rotary_interleaved=True,
                            scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0,
                            return_softmax_lse=False):
    """FA3's KV-cache (decoding) entry point. Not built in flash3 yet: raises NotImplementedError."""
    raise NotImplementedError("flash3: flash_attn_with_kvcache (KV-cache attention: paged KV, in-place cache "
                              "append, rotary) is not built yet")


def flash_attn_combine(out_partial, lse_partial, out=None, out_dtype=None):
    """FA3's merge of split-KV partial results. Not built in flash3 yet: raises NotImplementedError."""
    raise NotImplementedError("flash3: flash_attn_combine (merging split-KV partial results) is not built yet")


def get_scheduler_metadata(batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv, headdim,
                           cache_seqlens, qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None,
                           cu_seqlens_k_new=None, cache_leftpad=None, page_size=None, max_seqlen_k_new=0,
                           causal=False, window_size=(-1, -1), attention_chunk=0, has_softcap=False, num_splits=0,
                           pack_gqa=None, sm_margin=0):
    """FA3's split-KV scheduler planning for flash_attn_with_kvcache. Not built in flash3 yet."""
    raise NotImplementedError("flash3: get_scheduler_metadata (split-KV scheduler metadata for "
                              "flash_attn_with_kvcache) is not built yet")
