"""flash3 on an sm_90 GPU: forward and gradients against a float32 PyTorch reference under FA3's rule, varlen,
packed qkv, torch.compile, CUDA graphs, streams and error cases.

A variant whose kernel is not compiled into the library under test (FLASH3_KERNELS subset) is skipped with the
library's message; so is every gradient test while flash3_backward reports that the backward is not built.
"""
import contextlib

import pytest

from conftest import GPU_REASON

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
pytestmark = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")

import flash3  # noqa: E402
from attention_reference import (check_close, check_lse, cu_seqlens, reference, varlen_reference,  # noqa: E402
                                 visible_mask)

DEV = "cuda"
DTYPES = [torch.bfloat16, torch.float16]
HDIMS = [64, 128]


@contextlib.contextmanager
def kernel_or_skip():
    """Runs a flash3 call; a kernel that is not built (NOT_SUPPORTED) skips the test with the library's message."""
    try:
        yield
    except flash3.Flash3NotSupportedError as e:
        pytest.skip(f"not in this libflash3: {e}")


_BWD_STATE = {}


def backward_or_skip(fn):
    """Runs fn (which calls .backward()); while the backward kernel is not built, skips with the library's words."""
    try:
        return fn()
    except flash3.Flash3NotSupportedError as e:
        pytest.skip(f"flash3_backward: {e}")


def poison_allocator():
    """Fills freed blocks of torch's caching allocator (large and small pools) with NaN, so that an output element
    flash3 forgets to write shows up as NaN instead of a plausible stale value."""
    for n in (1 << 23, 1 << 17, 1 << 12):
        x = torch.full((n,), float("nan"), device=DEV)
        del x


def make(shape, dtype, gen, scale=1.0, grad=False):
    t = (torch.randn(shape, generator=gen, device=DEV, dtype=torch.float32) * scale).to(dtype)
    return t.requires_grad_(grad)


def gen(seed=0):
    return torch.Generator(device=DEV).manual_seed(seed)


def run_and_check(b, sq, sk, h, hk, d, dtype, causal=False, window=(-1, -1), softcap=0.0, part="fwd", seed=0,
                  scale=1.0, softmax_scale=None):
    """part "fwd": out and lse against the reference; "grad": also dq, dk, dv (skipped while no backward)."""
    grads = part == "grad"
    g = gen(seed)
    q = make((b, sq, h, d), dtype, g, scale, grad=grads)
    k = make((b, sk, hk, d), dtype, g, scale, grad=grads)
    v = make((b, sk, hk, d), dtype, g, grad=grads)
    poison_allocator()
    with kernel_or_skip():
        out, lse = flash3.flash_attn_func(q, k, v, softmax_scale=softmax_scale, causal=causal, window_size=window,
                                          softcap=softcap, return_attn_probs=True)
    torch.cuda.synchronize()
    kw = dict(softmax_scale=softmax_scale, causal=causal, window=window, softcap=softcap)
    ref, ref_lse = reference(q, k, v, upcast=True, **kw)
    low, _ = reference(q, k, v, upcast=False, **kw)
    assert out.shape == (b, sq, h, d) and out.dtype == dtype
    assert lse.shape == (b, h, sq) and lse.dtype == torch.float32
    check_close("out", out, ref, low)
    check_lse("lse", lse, ref_lse)
    if not grads:
        return
    dout = torch.randn_like(out)
    ins = (q, k, v)
    dq, dk, dv = backward_or_skip(lambda: torch.autograd.grad(out, ins, dout))
    rq, rk, rv = torch.autograd.grad(ref, ins, dout)
    lq, lk, lv = torch.autograd.grad(low, ins, dout)
    for name, x, r, lo in (("dq", dq, rq, lq), ("dk", dk, rk, lk), ("dv", dv, rv, lv)):
        check_close(name, x, r, lo)


# ---- forward and gradients vs the fp32 reference ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("d", HDIMS)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("b,sq,sk", [(1, 1, 1), (2, 113, 203), (2, 256, 256), (1, 517, 97), (1, 1023, 1023)])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_attention(part, dtype, d, causal, b, sq, sk):
    run_and_check(b, sq, sk, 4, 4, d, dtype, causal=causal, seed=sq * 7 + sk, part=part)


@pytest.mark.parametrize("window,causal", [((3, 0), False), ((16, 16), False), ((-1, 5), False), ((0, 0), False),
                                           ((32, -1), True), ((64, 0), True)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_window(part, window, causal, dtype):
    run_and_check(2, 200, 300, 4, 2, 128, dtype, causal=causal, window=window, part=part)


@pytest.mark.parametrize("softcap", [2.0, 30.0])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_softcap(part, softcap, causal):
    # Larger inputs so that the cap matters (scores beyond softcap are squashed).
    run_and_check(2, 150, 180, 4, 4, 128, torch.bfloat16, causal=causal, softcap=softcap, scale=3.0, part=part)


@pytest.mark.parametrize("h,hk", [(8, 1), (8, 2), (6, 3)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_gqa(part, h, hk, causal):
    run_and_check(2, 130, 257, h, hk, 64, torch.float16, causal=causal, part=part)


@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_softmax_scale(part):
    run_and_check(1, 64, 64, 2, 2, 128, torch.bfloat16, softmax_scale=0.3, part=part)


@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_causal_rows_without_keys(part):
    """seqlen_q > seqlen_k with causal: the first sq - sk rows see nothing -> out 0, lse -inf."""
    run_and_check(1, 100, 40, 2, 2, 64, torch.bfloat16, causal=True, part=part)


def test_noncontiguous_and_unaligned_inputs():
    g = gen(3)
    base = make((2, 4, 96, 128), torch.bfloat16, g)  # (b, h, s, d) storage, viewed as (b, s, h, d)
    q = base.transpose(1, 2)
    k = make((2, 96, 2, 130), torch.bfloat16, g)[..., 1:129]  # misaligned start and strides: copied inside
    v = make((2, 128, 2, 96), torch.bfloat16, g).permute(0, 3, 2, 1)  # last dim not contiguous
    with kernel_or_skip():
        out = flash3.flash_attn_func(q, k, v, causal=True)
    ref, _ = reference(q, k, v, causal=True)
    low, _ = reference(q, k, v, causal=True, upcast=False)
    check_close("out", out, ref, low)


# ---- varlen -------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("seqused", [False, True], ids=["all", "seqused"])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_varlen(part, causal, seqused):
    dtype, h, hk, d = torch.bfloat16, 4, 2, 128
    g = gen(11)
    lens_q = [17, 0, 130, 1, 64, 0]
    lens_k = [33, 5, 0, 1, 200, 0]
    cu_q, cu_k = cu_seqlens(lens_q, DEV), cu_seqlens(lens_k, DEV)
    q = make((sum(lens_q), h, d), dtype, g, grad=True)
    k = make((sum(lens_k), hk, d), dtype, g, grad=True)
    v = make((sum(lens_k), hk, d), dtype, g, grad=True)
    used_q = used_k = None
    if seqused:
        used_q = torch.tensor([min(x, 9) for x in lens_q], dtype=torch.int32, device=DEV)
        used_k = torch.tensor([max(x - 3, 0) for x in lens_k], dtype=torch.int32, device=DEV)
    poison_allocator()
    with kernel_or_skip():
        out, lse = flash3.flash_attn_varlen_func(q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), seqused_q=used_q,
                                                 seqused_k=used_k, causal=causal, return_attn_probs=True)
    assert out.shape == q.shape and lse.shape == (h, q.shape[0])
    ref, ref_lse = varlen_reference(q, k, v, cu_q, cu_k, used_q, used_k, causal=causal)
    low, _ = varlen_reference(q, k, v, cu_q, cu_k, used_q, used_k, upcast=False, causal=causal)
    rows = torch.zeros(q.shape[0], dtype=torch.bool, device=DEV)  # the rows flash3 writes
    for i, n in enumerate(lens_q):
        start = sum(lens_q[:i])
        rows[start:start + (n if used_q is None else int(used_q[i]))] = True
    check_close("out", out, ref, low, valid=rows.view(-1, 1, 1))
    check_lse("lse", lse, ref_lse, valid=rows.view(1, -1))
    if part == "fwd":
        return
    if seqused:
        pytest.skip("gradients with seqused: rows past seqused are not defined by the API, so not compared")
    dout = torch.randn_like(out)
    dq, dk, dv = backward_or_skip(lambda: torch.autograd.grad(out, (q, k, v), dout))
    rq, rk, rv = torch.autograd.grad(ref, (q, k, v), dout)
    lq, lk, lv = torch.autograd.grad(low, (q, k, v), dout)
    for name, x, r, lo in (("dq", dq, rq, lq), ("dk", dk, rk, lk), ("dv", dv, rv, lv)):
        check_close(name, x, r, lo)


# ---- packed qkv ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["5d", "4d-gqa"])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_qkvpacked(part, layout):
    g = gen(5)
    if layout == "5d":
        qkv = make((2, 150, 3, 4, 64), torch.bfloat16, g, grad=True)
        q, k, v = qkv.unbind(2)
        call = lambda: flash3.flash_attn_qkvpacked_func(qkv, causal=True)  # noqa: E731
    else:
        qkv = make((2, 150, 4 + 2 * 2, 64), torch.bfloat16, g, grad=True)
        q, k, v = qkv.split([4, 2, 2], dim=2)
        call = lambda: flash3.flash_attn_qkvpacked_func(qkv, causal=True, num_heads_q=4)  # noqa: E731
    with kernel_or_skip():
        out = call()
    ref, _ = reference(q, k, v, causal=True)
    low, _ = reference(q, k, v, causal=True, upcast=False)
    check_close("out", out, ref, low)
    if part == "fwd":
        return
    dout = torch.randn_like(out)
    (dqkv,) = backward_or_skip(lambda: torch.autograd.grad(out, (qkv,), dout))
    (rqkv,) = torch.autograd.grad(ref, (qkv,), dout)
    (lqkv,) = torch.autograd.grad(low, (qkv,), dout)
    assert dqkv.shape == qkv.shape
    check_close("dqkv", dqkv, rqkv, lqkv)


def test_deterministic_backward_is_reproducible():
    g = gen(9)
    q, k, v = (make((2, 300, 8, 128), torch.bfloat16, g, grad=True) for _ in range(3))
    with kernel_or_skip():
        out = flash3.flash_attn_func(q, k, v, causal=True, deterministic=True)
    dout = torch.randn_like(out)
    first = backward_or_skip(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    for _ in range(3):
        again = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        for a, b_ in zip(first, again):
            assert torch.equal(a, b_)


# ---- torch.library, torch.compile, CUDA graphs, streams --------------------------------------------------------------

def test_opcheck_forward():
    g = gen(1)
    q, k, v = (make((1, 64, 2, 64), torch.bfloat16, g) for _ in range(3))
    args = (q, k, v, None, None, None, None, 0, 0, 0.125, True, -1, -1, 0.0, None, None, None, False)
    with kernel_or_skip():
        torch.library.opcheck(torch.ops.flash3.fwd.default, args,
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


class Block(torch.nn.Module):
    def __init__(self, dim=256, heads=4, kv_heads=2):
        super().__init__()
        self.h, self.hk, self.d = heads, kv_heads, dim // heads
        self.qkv = torch.nn.Linear(dim, (heads + 2 * kv_heads) * self.d, bias=False)
        self.proj = torch.nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, self.h + 2 * self.hk, self.d).split([self.h, self.hk, self.hk], dim=2)
        o = flash3.flash_attn_func(q, k, v, causal=True)
        return self.proj(o.reshape(b, s, -1))


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_compile_fullgraph(part, backend):
    """torch.compile(fullgraph=True) of a block that calls flash3 (a graph break would raise): inference ("fwd"),
    or a training step through the compiled forward and backward graphs ("grad")."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = Block().to(DEV, torch.bfloat16)
    x = torch.randn(2, 128, 256, device=DEV, dtype=torch.bfloat16)
    with kernel_or_skip(), torch.no_grad():
        eager = m(x)
    cm = torch.compile(m, fullgraph=True, backend=backend)
    if part == "fwd":
        with torch.no_grad():
            compiled = cm(x)
        torch.testing.assert_close(compiled, eager, atol=2e-2, rtol=2e-2)
        return
    xg = x.clone().requires_grad_(True)
    backward_or_skip(lambda: cm(xg).float().pow(2).mean().backward())
    xe = x.clone().requires_grad_(True)
    m.zero_grad()
    m(xe).float().pow(2).mean().backward()
    torch.testing.assert_close(xg.grad, xe.grad, atol=2e-2, rtol=2e-2)


def test_cuda_graph_capture_and_replay():
    g = gen(2)
    q, k, v = (make((2, 256, 4, 128), torch.bfloat16, g) for _ in range(3))
    with kernel_or_skip():
        flash3.flash_attn_func(q, k, v, causal=True)  # warm-up outside the capture
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        flash3.flash_attn_func(q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = flash3.flash_attn_func(q, k, v, causal=True)
    for seed in (20, 21):
        g2 = gen(seed)
        for t in (q, k, v):
            t.copy_(make(t.shape, t.dtype, g2))
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        ref, _ = reference(q, k, v, causal=True)
        low, _ = reference(q, k, v, causal=True, upcast=False)
        check_close(f"replay seed {seed}", out, ref, low)


def test_runs_on_the_current_stream():
    """On a side stream held back by a long sleep, inputs are written and flash3 is called; if flash3 launched on
    any other stream it would read the NaN-poisoned inputs before they were written."""
    g = gen(6)
    src = [make((1, 512, 4, 128), torch.bfloat16, g) for _ in range(3)]
    dst = [torch.full_like(t, float("nan")) for t in src]
    with kernel_or_skip():
        flash3.flash_attn_func(*src)  # warm-up (lazy loading, allocator)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        torch.cuda._sleep(100_000_000)  # ~50 ms of GPU time on this stream only
        for d_, s_ in zip(dst, src):
            d_.copy_(s_)
        out = flash3.flash_attn_func(*dst)
    s.synchronize()
    ref, _ = reference(*src)
    low, _ = reference(*src, upcast=False)
    check_close("out on side stream", out, ref, low)


def test_other_device():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs (a tensor on cuda:1 must run on cuda:1)")
    g = torch.Generator(device="cuda:1").manual_seed(0)
    q, k, v = (torch.randn(1, 200, 2, 64, device="cuda:1", generator=g).bfloat16().requires_grad_()
               for _ in range(3))
    with torch.cuda.device(0):  # the current device is cuda:0; the tensors decide
        with kernel_or_skip():
            out = flash3.flash_attn_func(q, k, v, causal=True)
        assert torch.cuda.current_device() == 0
        assert out.device == q.device
        dout = torch.randn_like(out)
        dq, dk, dv = backward_or_skip(lambda: torch.autograd.grad(out, (q, k, v), dout))
        assert torch.cuda.current_device() == 0
    ref, _ = reference(q, k, v, causal=True)
    low, _ = reference(q, k, v, upcast=False, causal=True)
    check_close("out on cuda:1", out, ref, low)
    for name, x, r, lo in zip(("dq", "dk", "dv"), (dq, dk, dv), torch.autograd.grad(ref, (q, k, v), dout),
                              torch.autograd.grad(low, (q, k, v), dout)):
        assert x.device == q.device
        check_close(f"{name} on cuda:1", x, r, lo)


# ---- errors ---------------------------------------------------------------------------------------------------------------

def test_errors_before_launch():
    q = torch.randn(1, 16, 2, 64, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="CUDA"):
        flash3.flash_attn_func(q.cpu(), q.cpu(), q.cpu())
    with pytest.raises(ValueError, match="k is on cpu"):
        flash3.flash_attn_func(q, q.cpu(), q)
    with pytest.raises(TypeError, match="float16 or torch.bfloat16"):
        flash3.flash_attn_func(q.float(), q.float(), q.float())
    with pytest.raises(ValueError, match="headdim = 20"):
        flash3.flash_attn_func(q[..., :20], q[..., :20], q[..., :20])
    with pytest.raises(NotImplementedError, match="num_splits"):
        flash3.flash_attn_func(q, q, q, num_splits=3)


def test_library_errors_map_to_exceptions():
    """Calling the op directly with a layout the public API would have fixed: the C library rejects it, and its
    INVALID_ARGUMENT becomes a ValueError that carries flash3_last_error()."""
    q = torch.randn(1, 16, 2, 64, device=DEV, dtype=torch.bfloat16)
    cu = torch.tensor([0, 16], dtype=torch.int32, device=DEV)
    with pytest.raises(ValueError, match="flash3::forward") as e:
        # batch-mode tensors with cu_seqlens set: the library expects 3-D (varlen) tensors
        torch.ops.flash3.fwd(q, q, q, cu, cu, None, None, 16, 16, 0.125, False, -1, -1, 0.0, None, None, None, False)
    assert isinstance(e.value, flash3.Flash3InvalidArgumentError)


def test_fp8_reports_not_built_or_runs():
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("torch has no float8_e4m3fn")
    g = gen(8)
    q, k, v = (make((1, 64, 2, 128), torch.bfloat16, g).to(torch.float8_e4m3fn) for _ in range(3))
    ones = torch.ones(1, 2, device=DEV)
    try:
        out = flash3.flash_attn_func(q, k, v, q_descale=ones, k_descale=ones, v_descale=ones)
    except NotImplementedError as e:
        assert "FP8" in str(e) or "float8" in str(e)
        return
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_visible_mask_semantics():
    """The reference's mask itself, against the documented example: sq=2, sk=5 causal -> row 0 sees keys 0..3."""
    m = visible_mask(2, 5, True, (-1, -1), DEV)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


@pytest.mark.parametrize("part", ["fwd", "grad"])
def test_eager_fast_path_matches_custom_op(part, monkeypatch):
    """The eager fast path (no dispatcher) and the torch.library op give bitwise the same results."""
    from flash3 import _ops

    g = gen(12)
    q, k, v = (make((2, 100, 4, 64), torch.bfloat16, g, grad=True) for _ in range(3))
    with kernel_or_skip():
        fast = flash3.flash_attn_func(q, k, v, causal=True, deterministic=True, return_attn_probs=True)
    assert type(fast[0].grad_fn).__name__.startswith("_Attention")
    monkeypatch.setattr(_ops, "FAST_PATH", False)
    slow = flash3.flash_attn_func(q, k, v, causal=True, deterministic=True, return_attn_probs=True)
    assert not type(slow[0].grad_fn).__name__.startswith("_Attention")
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    if part == "fwd":
        return
    dout = torch.randn_like(fast[0])
    g_fast = backward_or_skip(lambda: torch.autograd.grad(fast[0], (q, k, v), dout))
    g_slow = torch.autograd.grad(slow[0], (q, k, v), dout)
    for a, b_ in zip(g_fast, g_slow):
        assert torch.equal(a, b_)


# Last in the file on purpose: a failed capture leaves torch's CUDA RNG in capture mode, which would fail every later
# test that draws random numbers on the GPU.
def test_cuda_graph_training_step():
    """Forward + backward captured together, then replayed against an fp32 reference. The leaves are first used,
    warmed up and captured on one side stream: autograd ties a leaf's gradient accumulation to the stream of its
    first use, and a capture fails when that is another stream (the legacy default stream always; see
    torch.autograd.graph.set_override_stale_capture_stream in recent torch)."""
    shape = (1, 128, 2, 64)
    probe = [make(shape, torch.bfloat16, gen(3), grad=True) for _ in range(3)]
    with kernel_or_skip():
        out = flash3.flash_attn_func(*probe)
    backward_or_skip(lambda: out.sum().backward())
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        g = gen(4)
        q, k, v = (make(shape, torch.bfloat16, g, grad=True) for _ in range(3))
        for _ in range(3):
            q.grad = k.grad = v.grad = None
            flash3.flash_attn_func(q, k, v).float().pow(2).sum().backward()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    q.grad = k.grad = v.grad = None
    with torch.cuda.graph(graph, stream=s):
        flash3.flash_attn_func(q, k, v).float().pow(2).sum().backward()
    for t in (q, k, v):
        t.grad.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    qr, kr, vr = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    ref, _ = reference(qr, kr, vr)
    ref.float().pow(2).sum().backward()
    ql, kl, vl = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    low, _ = reference(ql, kl, vl, upcast=False)
    low.float().pow(2).sum().backward()
    for name, x, r, lo in (("dq", q.grad, qr.grad, ql.grad), ("dk", k.grad, kr.grad, kl.grad),
                           ("dv", v.grad, vr.grad, vl.grad)):
        check_close(f"replayed {name}", x, r, lo)
