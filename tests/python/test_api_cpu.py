"""The Python API without a GPU: argument checks, NotImplementedError for unbuilt features, the fake (meta) ops,
the autograd wiring and torch.compile tracing, all on meta tensors (shapes only, nothing runs)."""
import ctypes
import inspect

import pytest

from conftest import needs_lib, needs_torch

torch = pytest.importorskip("torch", reason="PyTorch is not installed")

import flash3  # noqa: E402
from flash3 import flash_attn_interface as fai  # noqa: E402

META = torch.device("meta")
BF16 = torch.bfloat16

pytestmark = needs_torch


def qkv(b=2, sq=128, sk=256, h=4, hk=2, d=64, dv=None, dtype=BF16, device=META, grad=False):
    dv = d if dv is None else dv
    q = torch.empty(b, sq, h, d, dtype=dtype, device=device, requires_grad=grad)
    k = torch.empty(b, sk, hk, d, dtype=dtype, device=device, requires_grad=grad)
    v = torch.empty(b, sk, hk, dv, dtype=dtype, device=device, requires_grad=grad)
    return q, k, v


# ---- FA3's signatures, exactly --------------------------------------------------------------------------------------

FA3_SIGNATURES = {
    "flash_attn_func": "q, k, v, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, "
    "v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, "
    "deterministic=False, sm_margin=0, return_attn_probs=False",
    "flash_attn_varlen_func": "q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q=None, "
    "seqused_k=None, softmax_scale=None, causal=False, qv=None, q_descale=None, k_descale=None, v_descale=None, "
    "window_size=(-1, -1), attention_chunk=0, softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False, "
    "sm_margin=0, return_attn_probs=False",
    "flash_attn_qkvpacked_func": "qkv, softmax_scale=None, causal=False, q_descale=None, k_descale=None, "
    "v_descale=None, window_size=(-1, -1), attention_chunk=0, softcap=0.0, deterministic=False, num_heads_q=None, "
    "sm_margin=0, return_attn_probs=False",
    "flash_attn_with_kvcache": "q, k_cache, v_cache, k=None, v=None, qv=None, rotary_cos=None, rotary_sin=None, "
    "cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None, page_table=None, cu_seqlens_q=None, "
    "cu_seqlens_k_new=None, max_seqlen_q=None, rotary_seqlens=None, q_descale=None, k_descale=None, v_descale=None, "
    "softmax_scale=None, causal=False, window_size=(-1, -1), attention_chunk=0, softcap=0.0, "
    "rotary_interleaved=True, scheduler_metadata=None, num_splits=0, pack_gqa=None, sm_margin=0, "
    "return_softmax_lse=False",
    "flash_attn_combine": "out_partial, lse_partial, out=None, out_dtype=None",
    "get_scheduler_metadata": "batch_size, max_seqlen_q, max_seqlen_k, num_heads_q, num_heads_kv, headdim, "
    "cache_seqlens, qkv_dtype=torch.bfloat16, headdim_v=None, cu_seqlens_q=None, cu_seqlens_k_new=None, "
    "cache_leftpad=None, page_size=None, max_seqlen_k_new=0, causal=False, window_size=(-1, -1), "
    "attention_chunk=0, has_softcap=False, num_splits=0, pack_gqa=None, sm_margin=0",
}


@pytest.mark.parametrize("name", sorted(FA3_SIGNATURES))
def test_signature_matches_fa3(name):
    fn = getattr(flash3, name)
    assert fn is getattr(fai, name)
    got = str(inspect.signature(fn))[1:-1]
    assert got == FA3_SIGNATURES[name]


# ---- shapes through the fake implementations ------------------------------------------------------------------------

def test_forward_shapes_gqa_and_lse():
    q, k, v = qkv()
    out = flash3.flash_attn_func(q, k, v)
    assert out.shape == (2, 128, 4, 64) and out.dtype == BF16 and out.device == META
    out, lse = flash3.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert lse.shape == (2, 4, 128) and lse.dtype == torch.float32


def test_forward_shapes_hdim_192_128():
    q, k, v = qkv(d=192, dv=128, h=2, hk=2)
    assert flash3.flash_attn_func(q, k, v).shape == (2, 128, 2, 128)


def test_varlen_shapes():
    q = torch.empty(30, 4, 128, dtype=torch.float16, device=META)
    k = torch.empty(50, 1, 128, dtype=torch.float16, device=META)
    cu_q = torch.empty(4, dtype=torch.int32, device=META)
    cu_k = torch.empty(4, dtype=torch.int32, device=META)
    out, lse = flash3.flash_attn_varlen_func(q, k, k, cu_q, cu_k, 20, 30, return_attn_probs=True)
    assert out.shape == (30, 4, 128) and out.dtype == torch.float16
    assert lse.shape == (4, 30)


@pytest.mark.parametrize("layout", ["5d", "4d-gqa"])
def test_qkvpacked_shapes_and_grad(layout):
    if layout == "5d":
        qkv_t = torch.empty(2, 64, 3, 4, 64, dtype=BF16, device=META, requires_grad=True)
        out = flash3.flash_attn_qkvpacked_func(qkv_t, causal=True)
    else:
        qkv_t = torch.empty(2, 64, 6 + 2 * 2, 64, dtype=BF16, device=META, requires_grad=True)
        out = flash3.flash_attn_qkvpacked_func(qkv_t, num_heads_q=6)
    assert out.shape == (2, 64, 4 if layout == "5d" else 6, 64)
    out.sum().backward()
    assert qkv_t.grad.shape == qkv_t.shape


def test_autograd_wiring_calls_bwd_op():
    q, k, v = qkv(grad=True)
    out, lse = flash3.flash_attn_func(q, k, v, causal=True, return_attn_probs=True)
    assert out.requires_grad and not lse.requires_grad
    assert out.grad_fn is not None
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape


def test_inputs_copied_only_when_flash3_cannot_read_them():
    """The library's layout rule (last stride 1; other strides and the start address multiples of 16 bytes): a
    tensor that meets it is packed in place, one that does not is copied to a contiguous tensor first."""
    from flash3 import _lib, _ops

    def packed(t):
        buf = _lib.new_params()
        got = _ops._put_input(buf, "q", t)
        p = _lib.Params.from_buffer(buf)
        assert p.q.data == got.data_ptr() and p.q.rank == t.dim()
        assert list(p.q.stride)[:t.dim()] == list(got.stride())
        return got is t

    x = torch.randn(2, 16, 4, 64).to(BF16)
    assert packed(x)
    assert not packed(x.transpose(1, 3))  # last dim not contiguous
    assert packed(x.transpose(1, 2))  # (b, h, s, d) storage viewed as (b, s, h, d): fine
    assert packed(torch.empty(2, 16, 4, 72, dtype=BF16)[..., :64])  # row stride 144 bytes
    assert not packed(torch.empty(2, 16, 4, 68, dtype=BF16)[..., :64])  # 136 bytes
    assert not packed(torch.empty(1000, dtype=BF16)[4:4 + 2 * 64].view(2, 1, 1, 64))  # starts 8 bytes in
    copy = _ops._put_input(_lib.new_params(), "q", x.transpose(1, 3))
    assert copy.is_contiguous() and torch.equal(copy, x.transpose(1, 3))


# ---- errors before any launch ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,feature", [
    (dict(qv=torch.empty(1)), "qv"),
    (dict(attention_chunk=128), "attention_chunk"),
    (dict(num_splits=4), "num_splits"),
    (dict(pack_gqa=True), "pack_gqa"),
    (dict(sm_margin=8), "sm_margin"),
])
def test_unbuilt_features_raise_not_implemented(kwargs, feature):
    q, k, v = qkv()
    with pytest.raises(NotImplementedError, match=feature):
        flash3.flash_attn_func(q, k, v, **kwargs)


def test_heuristic_defaults_accepted():
    q, k, v = qkv()
    flash3.flash_attn_func(q, k, v, num_splits=0, pack_gqa=False)


@pytest.mark.parametrize("fn,args", [
    ("flash_attn_with_kvcache", (None, None, None)),
    ("flash_attn_combine", (None, None)),
    ("get_scheduler_metadata", (1, 1, 1, 1, 1, 64, None)),
])
def test_unbuilt_functions_raise_not_implemented(fn, args):
    with pytest.raises(NotImplementedError, match=fn):
        getattr(flash3, fn)(*args)


def test_errors_name_the_problem():
    q, k, v = qkv()
    cases = [
        (lambda: flash3.flash_attn_func(q.cpu() if False else torch.empty(2, 128, 4, 64, dtype=BF16), k, v),
         ValueError, "CUDA"),
        (lambda: flash3.flash_attn_func(q, torch.empty(2, 256, 2, 64, dtype=BF16), v), ValueError, "k is on cpu"),
        (lambda: flash3.flash_attn_func(q.float(), k.float(), v.float()), TypeError, "float16 or torch.bfloat16"),
        (lambda: flash3.flash_attn_func(q, k.half(), v), TypeError, "k.dtype"),
        (lambda: flash3.flash_attn_func(q[0], k, v), ValueError, "q must have 4 dims"),
        (lambda: flash3.flash_attn_func(q, k[:1], v), ValueError, "batch sizes differ"),
        (lambda: flash3.flash_attn_func(q, k, v[:, :7]), ValueError, "seqlen"),
        (lambda: flash3.flash_attn_func(*qkv(h=4, hk=3)), ValueError, "must divide"),
        (lambda: flash3.flash_attn_func(*qkv(d=60)), ValueError, "headdim = 60"),
        (lambda: flash3.flash_attn_func(*qkv(d=264)), ValueError, "headdim = 264"),
        (lambda: flash3.flash_attn_func(*qkv(d=128, dv=64)), ValueError, "headdim_v"),
        (lambda: flash3.flash_attn_func(q, k, v, causal=True, window_size=(4, 2)), ValueError, "causal"),
        (lambda: flash3.flash_attn_func(q, k, v, window_size=(-2, 0)), ValueError, "window_size"),
        (lambda: flash3.flash_attn_func(q, k, v, window_size=5), TypeError, "window_size"),
        (lambda: flash3.flash_attn_func(q, k, v, softcap=-1.0), ValueError, "softcap"),
        (lambda: flash3.flash_attn_func(q, k, v, softmax_scale=float("nan")), ValueError, "softmax_scale"),
        (lambda: flash3.flash_attn_func(q, k, v, q_descale=torch.empty(2, 2, device=META)), ValueError,
         "q_descale"),
        (lambda: flash3.flash_attn_func("q", k, v), TypeError, "q must be a torch.Tensor"),
        (lambda: flash3.flash_attn_qkvpacked_func(torch.empty(2, 8, 4, 4, 64, dtype=BF16, device=META)),
         ValueError, "expected 3"),
        (lambda: flash3.flash_attn_qkvpacked_func(torch.empty(2, 8, 12, 64, dtype=BF16, device=META)),
         ValueError, "num_heads_q"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            fn()


def test_varlen_errors():
    q = torch.empty(30, 4, 64, dtype=BF16, device=META)
    cu = torch.empty(3, dtype=torch.int32, device=META)
    with pytest.raises(TypeError, match="cu_seqlens_q.dtype"):
        flash3.flash_attn_varlen_func(q, q, q, cu.long(), cu, 8, 8)
    with pytest.raises(ValueError, match="cu_seqlens_k has 4 entries"):
        flash3.flash_attn_varlen_func(q, q, q, cu, torch.empty(4, dtype=torch.int32, device=META), 8, 8)
    with pytest.raises(ValueError, match="seqused_k has 3 entries"):
        flash3.flash_attn_varlen_func(q, q, q, cu, cu, 8, 8, seqused_k=cu)
    with pytest.raises(TypeError, match="max_seqlen_q must be an int"):
        flash3.flash_attn_varlen_func(q, q, q, cu, cu, 8.0, 8)
    with pytest.raises(ValueError, match="q must have 3 dims"):
        flash3.flash_attn_varlen_func(q[None], q, q, cu, cu, 8, 8)


# ---- torch.compile ---------------------------------------------------------------------------------------------------

def test_compile_fullgraph_traces_forward_and_backward():
    """fullgraph=True (a graph break is an error); the AOT graphs hold flash3::fwd and flash3::bwd."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind] = str(gm.graph)
            return make_boxed_func(gm.forward)
        return compiler

    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"))

    def block(x, wq, wk, wv):
        b, s, _ = x.shape
        q = (x @ wq).view(b, s, 4, 64)
        k = (x @ wk).view(b, s, 2, 64)
        v = (x @ wv).view(b, s, 2, 64)
        o = flash3.flash_attn_func(q, k, v, causal=True, window_size=(32, 0))
        return o.reshape(b, s, 256).float().pow(2).mean()

    torch._dynamo.reset()
    f = torch.compile(block, fullgraph=True, backend=backend)
    x = torch.empty(2, 64, 256, dtype=BF16, device=META)
    ws = [torch.empty(256, n, dtype=BF16, device=META, requires_grad=True) for n in (256, 128, 128)]
    f(x, *ws).backward()
    assert "flash3.fwd" in graphs["fw"]
    assert "flash3.bwd" in graphs["bw"]
    assert all(w.grad is not None for w in ws)


def test_compile_fullgraph_varlen_and_packed():
    torch._dynamo.reset()

    def f(qkv_t, q, cu):
        a = flash3.flash_attn_qkvpacked_func(qkv_t, causal=True)
        b = flash3.flash_attn_varlen_func(q, q, q, cu, cu, 16, 16, causal=True)
        return a.sum() + b.sum()

    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    qkv_t = torch.empty(2, 32, 3, 2, 64, dtype=BF16, device=META, requires_grad=True)
    q = torch.empty(40, 2, 64, dtype=BF16, device=META, requires_grad=True)
    cu = torch.empty(4, dtype=torch.int32, device=META)
    cf(qkv_t, q, cu).backward()
    assert qkv_t.grad.shape == qkv_t.shape and q.grad.shape == q.shape


def test_library_not_needed_for_fake_path(monkeypatch):
    """Tracing needs shapes only: with no libflash3 at all, meta calls still work."""
    from flash3 import _lib

    monkeypatch.setenv("FLASH3_LIBRARY", "/nonexistent/libflash3.so")
    monkeypatch.setattr(_lib, "_library", None)
    q, k, v = qkv()
    assert flash3.flash_attn_func(q, k, v).shape == q.shape


# ---- what the real implementations hand to libflash3 (a recording stand-in for the library, CPU tensors) -----------

class _RecordingLib:
    def __init__(self, workspace=256):
        self.calls = []
        self.workspace = workspace
        self.first_forward_status = 0  # what the eager first attempt (flash3_forward with the small workspace) returns

    def forward_status(self, address):
        from flash3 import _lib

        self.calls.append(("forward_try", ctypes.string_at(address, _lib.PARAMS_SIZE)))
        return self.first_forward_status

    def _size(self, kind):
        def size(buf):
            self.calls.append((kind + "_ws", bytes(buf)))
            return self.workspace
        return size

    def __getattr__(self, name):
        if name in ("forward_workspace_size", "backward_workspace_size"):
            return self._size(name.split("_")[0])
        if name in ("forward", "backward"):
            return lambda buf: self.calls.append((name, bytes(buf)))
        raise AttributeError(name)

    def params(self, kind):
        from flash3 import _lib

        # "forward": the call that ran, whether the eager first attempt or the general path.
        kinds = ("forward", "forward_try") if kind == "forward" else (kind,)
        return _lib.Params.from_buffer_copy([c for k, c in self.calls if k in kinds][-1])


@pytest.fixture
def recording_lib(monkeypatch):
    from flash3 import _lib, _ops

    lib = _RecordingLib()
    monkeypatch.setattr(_lib, "get", lambda: lib)
    monkeypatch.setattr(_ops, "_device_index", lambda device: 0)
    monkeypatch.setattr(_ops, "_get_device", lambda: 0)
    monkeypatch.setattr(_ops, "_set_device", lambda idx: pytest.fail("unexpected device switch"))
    monkeypatch.setattr(_ops, "_stream_ptr", lambda idx: 0x5000)
    monkeypatch.setattr(_ops, "_is_capturing", lambda: False)
    monkeypatch.setattr(_ops, "_workspaces", {})
    return lib


def _tensor_fields(t):
    return t.data, t.dtype, t.rank, list(t.shape)[:t.rank], list(t.stride)[:t.rank]


def _lib_params(raw):
    from flash3 import _lib

    return _lib.Params.from_buffer_copy(raw)


def test_forward_marshalling(recording_lib):
    from flash3 import _lib, _ops

    recording_lib.first_forward_status = 1  # as if the small workspace did not suffice: the general path runs

    q = torch.randn(2, 16, 4, 64).to(BF16)
    k = torch.randn(2, 24, 2, 64).to(BF16)
    v = torch.randn(2, 64, 2, 24).to(BF16).transpose(1, 3)  # (2, 24, 2, 64), last dim strided
    assert v.stride(-1) != 1
    out, lse = _ops.fwd_impl(q, k, v, None, None, None, None, 0, 0, 0.2, True, 5, 0, 1.5, None, None, None, True)
    assert out.shape == (2, 16, 4, 64) and lse.shape == (2, 4, 16) and lse.dtype == torch.float32
    p = recording_lib.params("forward")
    assert p.struct_size == _lib.PARAMS_SIZE
    assert _tensor_fields(p.q) == (q.data_ptr(), _lib.DTYPE_BFLOAT16, 4, [2, 16, 4, 64], list(q.stride()))
    assert _tensor_fields(p.k) == (k.data_ptr(), _lib.DTYPE_BFLOAT16, 4, [2, 24, 2, 64], list(k.stride()))
    assert p.v.data != v.data_ptr() and list(p.v.stride)[:4] == [24 * 2 * 64, 2 * 64, 64, 1]  # a contiguous copy
    assert _tensor_fields(p.out) == (out.data_ptr(), _lib.DTYPE_BFLOAT16, 4, [2, 16, 4, 64], list(out.stride()))
    assert _tensor_fields(p.lse) == (lse.data_ptr(), _lib.DTYPE_FLOAT32, 3, [2, 4, 16], [64, 16, 1])
    assert (p.causal, p.window_left, p.window_right, p.deterministic) == (1, 5, 0, 0)
    assert p.softmax_scale == pytest.approx(0.2) and p.softcap == 1.5
    assert p.stream == 0x5000 and p.workspace != 0 and p.workspace_bytes == 256
    assert p.cu_seqlens_q is None and p.varlen_batch == 0
    assert p.dout.rank == 0 and p.dq.data is None and p.q_descale.rank == 0
    # The first attempt (small per-stream workspace) failed as told, so the size query ran and saw the same struct.
    tried = recording_lib.params("forward_try")
    assert tried.q.data == p.q.data and tried.workspace == p.workspace and tried.workspace_bytes == 4096
    ws_query = recording_lib.params("forward_ws")
    assert ws_query.q.data == p.q.data and ws_query.stream == 0x5000
    # The small workspace is reused on the same stream.
    first_ws = p.workspace
    _ops.fwd_impl(q, k, k, None, None, None, None, 0, 0, 0.2, True, 5, 0, 1.5, None, None, None, True)
    assert recording_lib.params("forward").workspace == first_ws


def test_forward_eager_call_needs_no_workspace_query(recording_lib):
    """In eager mode the forward is tried once with the per-stream small workspace; when that succeeds, neither the
    size query nor a second call happens, and the same workspace serves the next call on the stream."""
    from flash3 import _ops

    recording_lib.first_forward_status = 0
    q = torch.randn(1, 8, 2, 64).to(BF16)
    for _ in range(2):
        _ops.fwd_impl(q, q, q, None, None, None, None, 0, 0, 0.125, True, -1, 0, 0.0, None, None, None, False)
    kinds = [k for k, _ in recording_lib.calls]
    assert kinds == ["forward_try", "forward_try"]
    first, second = (_lib_params(c) for k, c in recording_lib.calls)
    assert first.workspace == second.workspace != 0 and first.workspace_bytes == 4096 and first.causal == 1


def test_forward_without_lse_and_varlen_marshalling(recording_lib):
    from flash3 import _ops

    q = torch.randn(30, 4, 128).to(torch.float16)
    k = torch.randn(50, 1, 128).to(torch.float16)
    cu_q = torch.tensor([0, 10, 10, 30], dtype=torch.int32)
    cu_k = torch.tensor([0, 20, 20, 50], dtype=torch.int32)
    used = torch.tensor([5, 0, 20], dtype=torch.int32)
    out, lse = _ops.fwd_impl(q, k, k, cu_q, cu_k, used, None, 20, 30, 0.1, False, -1, -1, 0.0, None, None, None,
                             False, need_lse=False)
    assert lse is None and out.shape == (30, 4, 128)
    p = recording_lib.params("forward")
    assert p.lse.rank == 0 and p.lse.data is None  # not given: the library does not write it
    assert (p.cu_seqlens_q, p.cu_seqlens_k, p.seqused_q, p.seqused_k) == (cu_q.data_ptr(), cu_k.data_ptr(),
                                                                          used.data_ptr(), None)
    assert (p.varlen_batch, p.max_seqlen_q, p.max_seqlen_k) == (3, 20, 30)
    assert p.q.rank == 3 and list(p.q.shape)[:3] == [30, 4, 128]


def test_backward_marshalling(recording_lib):
    from flash3 import _lib, _ops

    recording_lib.workspace = 1 << 20  # large: allocated per call, not cached
    q = torch.randn(1, 8, 4, 64).to(BF16)
    k = torch.randn(1, 12, 2, 64).to(BF16)
    out = torch.randn(1, 8, 4, 64).to(BF16)
    lse = torch.randn(1, 4, 8)
    dout = torch.randn(1, 8, 4, 64).to(BF16)
    dq, dk, dv = _ops.bwd_impl(dout, q, k, k, out, lse, None, None, None, None, 0, 0, 0.125, False, -1, 3, 2.0, True)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == k.shape
    p = recording_lib.params("backward")
    assert _tensor_fields(p.dout) == (dout.data_ptr(), _lib.DTYPE_BFLOAT16, 4, [1, 8, 4, 64], list(dout.stride()))
    assert (p.dq.data, p.dk.data, p.dv.data) == (dq.data_ptr(), dk.data_ptr(), dv.data_ptr())
    assert (p.out.data, p.lse.data, p.lse.dtype) == (out.data_ptr(), lse.data_ptr(), _lib.DTYPE_FLOAT32)
    assert (p.deterministic, p.window_left, p.window_right, p.softcap) == (1, -1, 3, 2.0)
    assert p.workspace_bytes == 1 << 20 and p.workspace != 0 and p.stream == 0x5000


@needs_lib
def test_marshalled_params_pass_the_real_library_validation(recording_lib):
    """The bytes fwd_impl/bwd_impl hand over, checked by libflash3's own validation (for sm_90, launching nothing):
    valid calls pass; a rank mismatch that only a direct op call can produce is the library's ValueError."""
    from flash3 import _lib, _ops

    real = _lib.Library(_lib.candidate_paths()[0]) if _lib._library is None else _lib._library
    q = torch.randn(2, 64, 4, 128).to(BF16)
    k = torch.randn(2, 80, 2, 128).to(BF16)
    _ops.fwd_impl(q, k, k, None, None, None, None, 0, 0, 0.1, True, 16, 0, 0.0, None, None, None, False)
    buf = ctypes.create_string_buffer(recording_lib.calls[-1][1], _lib.PARAMS_SIZE)
    real.validate_forward(buf, 90)
    lse = torch.randn(2, 4, 64)
    _ops.bwd_impl(q, q, k, k, q, lse, None, None, None, None, 0, 0, 0.1, True, -1, -1, 0.0, False)
    buf = ctypes.create_string_buffer(recording_lib.calls[-1][1], _lib.PARAMS_SIZE)
    real.validate_backward(buf, 90)
    cu = torch.tensor([0, 64], dtype=torch.int32)
    _ops.fwd_impl(q, k, k, cu, cu, None, None, 64, 80, 0.1, False, -1, -1, 0.0, None, None, None, False)
    buf = ctypes.create_string_buffer(recording_lib.calls[-1][1], _lib.PARAMS_SIZE)
    with pytest.raises(ValueError, match="rank"):
        real.validate_forward(buf, 90)
