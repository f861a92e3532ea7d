"""The kernel manifest: every kernel variant flash3 can compile, as data.

One entry per generated file (one kernel per file, so file count equals build cost). Runtime flags that cost nothing
in the steady-state loop (varlen, seqused, GQA ratio, causal vs. window, odd sizes) stay runtime parameters; only
what changes the hot loop or the tile shape is a compile-time variant:
  dtype    fp16 | bf16 | e4m3    (element type of q, k, v; out too except e4m3, whose out is bf16 or fp16)
  hdim     (d, dv)               compiled head dims; smaller d that are multiples of 8 round up to the next one
  mask     none | local          local covers causal, sliding window and causal+window (masked trips only)
  softcap  0 | 1                 tanh softcapping in the score path
"""

HEAD_DIMS = [(64, 64), (96, 96), (128, 128), (192, 128), (192, 192), (256, 256)]
DTYPES = ["fp16", "bf16"]
MASKS = ["none", "local"]
SOFTCAPS = [0, 1]


def kernel_name(k):
    d, dv = k["hdim"]
    hd = f"hd{d}" if d == dv else f"hd{d}x{dv}"
    sc = "_softcap" if k["softcap"] else ""
    return f"{k['dir']}_{k['arch']}_{k['dtype']}_{hd}_{k['mask']}{sc}"


def forward_kernels():
    out = []
    for dtype in DTYPES:
        for hdim in HEAD_DIMS:
            for mask in MASKS:
                for softcap in SOFTCAPS:
                    out.append(dict(arch="sm90", dir="fwd", dtype=dtype, hdim=hdim, mask=mask, softcap=softcap))
    return out


# The backward kernels (kernels/sm90/bwd_*): every forward head dim (two tilings, see bwd_kernel_traits_sm90.hpp).
BACKWARD_HEAD_DIMS = HEAD_DIMS


def backward_kernels():
    out = []
    for dtype in DTYPES:
        for hdim in BACKWARD_HEAD_DIMS:
            for mask in MASKS:
                for softcap in SOFTCAPS:
                    out.append(dict(arch="sm90", dir="bwd", dtype=dtype, hdim=hdim, mask=mask, softcap=softcap))
    return out


# The FP8 (e4m3) forward (issue 5): inputs e4m3, output bf16 or fp16 chosen at run time (one kernel for both).
# Tiles are mask-independent (kernels/sm90/fp8_fwd_traits_sm90.hpp), so the block-quantisation granularity depends
# on the head dim alone.
FP8_HEAD_DIMS = [(64, 64), (128, 128), (256, 256)]


def fp8_forward_kernels():
    out = []
    for hdim in FP8_HEAD_DIMS:
        for mask in MASKS:
            out.append(dict(arch="sm90", dir="fwd", dtype="e4m3", hdim=hdim, mask=mask, softcap=0))
    return out


def all_kernels():
    return forward_kernels() + backward_kernels() + fp8_forward_kernels()


def _field_str(k, field):
    if field == "hdim":
        d, dv = k["hdim"]
        return {str(d), f"{d}x{dv}"} if d == dv else {f"{d}x{dv}"}
    return {str(k[field])}


def select(filter_spec):
    """filter_spec: 'all', 'none', or ';'-separated 'field=v1,v2' clauses that must all match; several such specs
    joined by '|' select the union (e.g. 'dir=bwd|dtype=bf16;hdim=128')."""
    spec = (filter_spec or "all").strip()
    if "|" in spec:
        chosen = {kernel_name(k) for alt in spec.split("|") for k in select(alt)}
        return [k for k in all_kernels() if kernel_name(k) in chosen]
    kernels = all_kernels()
    if spec == "all":
        return kernels
    if spec == "none":
        return []
    clauses = []
    for clause in filter(None, (c.strip() for c in spec.split(";"))):
        if "=" not in clause:
            raise ValueError(f"FLASH3_KERNELS clause '{clause}' is not field=values")
        field, values = clause.split("=", 1)
        field = field.strip()
        if field not in ("arch", "dir", "dtype", "hdim", "mask", "softcap"):
            raise ValueError(f"FLASH3_KERNELS: unknown field '{field}'")
        clauses.append((field, {v.strip() for v in values.split(",")}))
    return [k for k in kernels if all(_field_str(k, f) & vals for f, vals in clauses)]


if __name__ == "__main__":
    # Prints the kernel-key table (docs/kernels.md is this output): python3 tools/kernel_manifest.py [FILTER]
    import sys as _sys
    print("| kernel (generated file stem) | arch | dtype | d x dv | mask | softcap |")
    print("|---|---|---|---|---|---|")
    for k in select(_sys.argv[1] if len(_sys.argv) > 1 else "all"):
        d, dv = k["hdim"]
        print(f"| {kernel_name(k)} | {k['arch']} | {k['dtype']} | {d} x {dv} | {k['mask']} | {k['softcap']} |")
