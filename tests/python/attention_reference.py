"""Plain-PyTorch attention with flash3's exact semantics, the oracle of the GPU tests, and FA3's tolerance rule.

reference(q, k, v, ..., upcast=True) computes in float32 (the "exact" answer); upcast=False computes in the inputs'
own dtype like a naive PyTorch model would (scores, probabilities and output rounded to fp16/bf16). The rule, as in
tests/cpp/common/tolerance.hpp:

    max |flash3 - ref_fp32|  <=  2 * max |naive_lowprec - ref_fp32|  +  1e-5  +  4 * FLT_EPSILON * max |ref_fp32|
"""
import itertools

import torch

NOISE_ABS = 1e-5
NOISE_REL = 4.0 * 1.1920928955078125e-07
LSE_TOL = 1e-3


def visible_mask(sq, sk, causal, window, device):
    """(sq, sk) bool: which keys each query sees (bottom-right aligned causal/window)."""
    left, right = window
    if causal:
        right = 0
    i = torch.arange(sq, device=device).view(-1, 1)
    j = torch.arange(sk, device=device).view(1, -1)
    diag = i + sk - sq
    vis = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if left >= 0:
        vis &= j >= diag - left
    if right >= 0:
        vis &= j <= diag + right
    return vis


def reference(q, k, v, softmax_scale=None, causal=False, window=(-1, -1), softcap=0.0, upcast=True):
    """q (b, sq, h, d), k/v (b, sk, hk, d) -> out (b, sq, h, dv) in q.dtype, lse (b, h, sq) fp32. Differentiable."""
    dtype = q.dtype
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    g = h // hk
    k = k.repeat_interleave(g, dim=2)
    v = v.repeat_interleave(g, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q * scale if not upcast else q, k)
    if upcast:
        scores = scores * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    vis = visible_mask(sq, sk, causal, window, q.device)
    scores = scores.masked_fill(~vis, float("-inf"))
    lse = torch.logsumexp(scores.float(), dim=-1)  # (b, h, sq)
    p = torch.softmax(scores, dim=-1)
    # Rows that see no key: softmax gives NaN; flash3 (and FA3) give 0.
    p = p.masked_fill(~vis.any(dim=-1).view(1, 1, sq, 1), 0.0)
    out = torch.einsum("bhij,bjhd->bihd", p.to(v.dtype), v)
    return out.to(dtype), lse


def varlen_reference(q, k, v, cu_q, cu_k, seqused_q=None, seqused_k=None, upcast=True, **kw):
    """Packed (total, h, d) tensors: the batch reference sequence by sequence. Rows past seqused_q are zero in out
    and -inf in lse (the tests do not compare them)."""
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    outs, lses = [], []
    h, dv = q.shape[1], v.shape[-1]
    for i in range(len(cu_q) - 1):
        sq, sk = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        uq = sq if seqused_q is None else int(seqused_q[i])
        uk = sk if seqused_k is None else int(seqused_k[i])
        qi = q[cu_q[i]:cu_q[i] + uq].unsqueeze(0)
        ki = k[cu_k[i]:cu_k[i] + uk].unsqueeze(0)
        vi = v[cu_k[i]:cu_k[i] + uk].unsqueeze(0)
        if uq > 0 and uk > 0:
            o, lse = reference(qi, ki, vi, upcast=upcast, **kw)
            o, lse = o[0], lse[0]
        else:
            o = q.new_zeros(uq, h, dv)
            lse = torch.full((h, uq), float("-inf"), device=q.device)
        pad = sq - uq
        outs.append(torch.cat([o, o.new_zeros(pad, h, dv)]) if pad else o)
        lses.append(torch.cat([lse, lse.new_full((h, pad), float("-inf"))], dim=1) if pad else lse)
    return torch.cat(outs), torch.cat(lses, dim=1)


def check_close(name, out, ref, lowprec, valid=None):
    """FA3's rule; raises AssertionError with the numbers. `valid`: bool mask (broadcastable) of compared elements."""
    out, ref, lowprec = out.double(), ref.double(), lowprec.double()
    if valid is not None:
        valid = valid.expand_as(out)
        out, ref, lowprec = out[valid], ref[valid], lowprec[valid]
    assert torch.isfinite(out).all(), f"{name}: {(~torch.isfinite(out)).sum().item()} non-finite values"
    if out.numel() == 0:
        return
    err = (out - ref).abs().max().item()
    naive = (lowprec - ref).abs().max().item()
    bound = 2 * naive + NOISE_ABS + NOISE_REL * ref.abs().max().item()
    assert err <= bound, f"{name}: max|flash3 - ref| = {err:.3g} > {bound:.3g} (2 x naive error {naive:.3g} + noise)"


def check_lse(name, lse, ref, valid=None):
    lse, ref = lse.double(), ref.double()
    if valid is not None:
        valid = valid.expand_as(lse)
        lse, ref = lse[valid], ref[valid]
    dead = torch.isinf(ref)
    assert torch.equal(torch.isneginf(lse) & dead, dead), f"{name}: rows that see no key must have lse = -inf"
    live = ~dead
    if live.any():
        err = ((lse[live] - ref[live]).abs() / ref[live].abs().clamp(min=1)).max().item()
        assert err <= LSE_TOL, f"{name}: relative lse error {err:.3g} > {LSE_TOL}"


def random_seqlens(batch, max_len, gen, with_empty=True):
    lens = torch.randint(0, max_len + 1, (batch,), generator=gen).tolist()
    if with_empty and batch >= 2:
        lens[1] = 0
    return lens


def cu_seqlens(lens, device):
    return torch.tensor([0] + list(itertools.accumulate(lens)), dtype=torch.int32, device=device)
