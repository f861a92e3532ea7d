#!/usr/bin/env python3
"""flash3 against its peers, in one PyTorch process on one GPU.

flash3 is called through its C ABI (include/flash3/flash3_c.h, loaded with ctypes from libflash3.so); the peers are
PyTorch SDPA backends (cuDNN by default; --peers cudnn,flash,efficient). Configs follow the FA3 paper and the anchors
(benchmarks/anchors.py): bf16, batch = 16384 / seqlen, heads = 2048 / hdim, layout (b, s, h, d), FLOPs
4*b*h*s^2*d (/2 causal). Every config is checked against SDPA before it is timed; times are triton.testing.do_bench
medians (it flushes the L2 before every call), or CUDA-event medians of 100 calls with a 256 MiB flush without triton.

  python3 benchmarks/compare.py                       # full sweep: hdim 64/128/256 x full/causal x 512..16384
  python3 benchmarks/compare.py --quick               # 12 configs
  python3 benchmarks/compare.py --selftest            # no GPU, no torch: the ctypes struct against the C header

Output: a markdown table (--out, default compare-fwd.md) with a JSON twin beside it; the table is printed last.
Exit status: 0 ok; 1 a MISMATCH or a flash3 error; 2 no GPU / no torch / no library; 3 mode not built yet.
"""
import argparse
import ctypes
import datetime
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HEADER = os.path.join(ROOT, "include", "flash3", "flash3_c.h")
sys.path.insert(0, HERE)
import anchors  # noqa: E402

TOTAL_TOKENS = 16384
HIDDEN = 2048
SEQLENS = (512, 1024, 2048, 4096, 8192, 16384)
HDIMS = (64, 128, 256)
QUICK_SEQLENS = (1024, 4096)
MISMATCH_TOL = 2e-2  # max |flash3 - SDPA| beyond this is flagged
PEER_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}
PEER_LABELS = {"cudnn": "cuDNN", "flash": "FA2 (SDPA flash)", "efficient": "SDPA efficient"}

# ---- the C ABI, mirrored field by field (order and types exactly as in flash3_c.h) ------------------------------

FLASH3_MAX_RANK = 5
DTYPE = {"float16": 0, "bfloat16": 1, "float32": 2, "float8_e4m3fn": 3, "int32": 4}
STATUS_NAMES = {0: "FLASH3_STATUS_SUCCESS", 1: "FLASH3_STATUS_INVALID_ARGUMENT", 2: "FLASH3_STATUS_NOT_SUPPORTED",
                3: "FLASH3_STATUS_NO_DEVICE", 4: "FLASH3_STATUS_CUDA_ERROR", 5: "FLASH3_STATUS_INTERNAL_ERROR"}
STATUS_SUCCESS = 0
STATUS_NOT_SUPPORTED = 2


class Flash3Tensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("shape", ctypes.c_int64 * FLASH3_MAX_RANK),
        ("stride", ctypes.c_int64 * FLASH3_MAX_RANK),
    ]


class Flash3Params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("q", Flash3Tensor),
        ("k", Flash3Tensor),
        ("v", Flash3Tensor),
        ("out", Flash3Tensor),
        ("lse", Flash3Tensor),
        ("dout", Flash3Tensor),
        ("dq", Flash3Tensor),
        ("dk", Flash3Tensor),
        ("dv", Flash3Tensor),
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
    ]


class Flash3Error(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"{STATUS_NAMES.get(status, status)}: {message}")
        self.status = status


def find_library(explicit=None):
    """--lib, else $FLASH3_LIB, else the newest build/*/libflash3.so* under the repository."""
    if explicit:
        return explicit
    if os.environ.get("FLASH3_LIB"):
        return os.environ["FLASH3_LIB"]
    found = [p for p in glob.glob(os.path.join(ROOT, "build", "*", "libflash3.so*")) if os.path.isfile(p)]
    if not found:
        return None
    return max(found, key=os.path.getmtime)


class Flash3Lib:
    """The C ABI of libflash3.so with argtypes/restype set (ctypes then converts and checks the arguments)."""

    def __init__(self, path):
        self.path = path
        self.lib = ctypes.CDLL(path)
        P = ctypes.POINTER(Flash3Params)
        sig = {
            "flash3_attention_params_init": (None, [P]),
            "flash3_forward": (ctypes.c_int, [P]),
            "flash3_forward_workspace_size": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_int64)]),
            "flash3_backward": (ctypes.c_int, [P]),
            "flash3_backward_workspace_size": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_int64)]),
            "flash3_last_error": (ctypes.c_char_p, []),
            "flash3_status_name": (ctypes.c_char_p, [ctypes.c_int]),
            "flash3_version": (ctypes.c_char_p, []),
            "flash3_c_api_version": (ctypes.c_int32, []),
            "flash3_kernel_list": (ctypes.c_char_p, []),
        }
        for name, (restype, argtypes) in sig.items():
            fn = getattr(self.lib, name)  # AttributeError names the missing symbol
            fn.restype = restype
            fn.argtypes = argtypes
        self.version = self.lib.flash3_version().decode()
        self.api_version = self.lib.flash3_c_api_version()
        probe = Flash3Params()
        self.lib.flash3_attention_params_init(ctypes.byref(probe))
        if probe.struct_size != ctypes.sizeof(Flash3Params):
            raise RuntimeError(f"{path}: flash3_attention_params_init set struct_size={probe.struct_size}, but this "
                               f"script's mirror is {ctypes.sizeof(Flash3Params)} bytes: rerun --selftest and update "
                               "Flash3Params to match include/flash3/flash3_c.h")

    def new_params(self):
        p = Flash3Params()
        self.lib.flash3_attention_params_init(ctypes.byref(p))
        p.struct_size = ctypes.sizeof(Flash3Params)
        return p

    def check(self, status):
        if status != STATUS_SUCCESS:
            raise Flash3Error(status, self.lib.flash3_last_error().decode(errors="replace"))

    def forward_workspace_size(self, params):
        n = ctypes.c_int64(0)
        self.check(self.lib.flash3_forward_workspace_size(ctypes.byref(params), ctypes.byref(n)))
        return n.value

    def forward(self, params):
        self.check(self.lib.flash3_forward(ctypes.byref(params)))


def set_tensor(dst, t, dtype_code=None):
    """Fills a Flash3Tensor from a torch tensor (strides in elements)."""
    if t.dim() > FLASH3_MAX_RANK:
        raise ValueError(f"rank {t.dim()} > {FLASH3_MAX_RANK}")
    dst.data = t.data_ptr()
    dst.dtype = DTYPE[str(t.dtype).replace("torch.", "")] if dtype_code is None else dtype_code
    dst.rank = t.dim()
    for i in range(FLASH3_MAX_RANK):
        dst.shape[i] = t.shape[i] if i < t.dim() else 0
        dst.stride[i] = t.stride(i) if i < t.dim() else 0


# ---- selftest (no GPU, no torch) ----------------------------------------------------------------------------------

_C_PROBE = r"""
#include <stddef.h>
#include <stdio.h>
#include "flash3/flash3_c.h"
#define F(S, f) printf("\"%s.%s\": [%zu, %zu],\n", #S, #f, offsetof(S, f), sizeof(((S*)0)->f));
int main(void) {
  printf("{\n");
  printf("\"sizeof.flash3_tensor\": [%zu, %zu],\n", sizeof(flash3_tensor), _Alignof(flash3_tensor));
  printf("\"sizeof.flash3_attention_params\": [%zu, %zu],\n", sizeof(flash3_attention_params),
         _Alignof(flash3_attention_params));
%(fields)s
  printf("\"enum.FLASH3_DTYPE_FLOAT16\": [%d, 0],\n", (int)FLASH3_DTYPE_FLOAT16);
  printf("\"enum.FLASH3_DTYPE_BFLOAT16\": [%d, 0],\n", (int)FLASH3_DTYPE_BFLOAT16);
  printf("\"enum.FLASH3_DTYPE_FLOAT32\": [%d, 0],\n", (int)FLASH3_DTYPE_FLOAT32);
  printf("\"enum.FLASH3_DTYPE_FLOAT8_E4M3\": [%d, 0],\n", (int)FLASH3_DTYPE_FLOAT8_E4M3);
  printf("\"enum.FLASH3_DTYPE_INT32\": [%d, 0],\n", (int)FLASH3_DTYPE_INT32);
  printf("\"enum.FLASH3_STATUS_SUCCESS\": [%d, 0],\n", (int)FLASH3_STATUS_SUCCESS);
  printf("\"enum.FLASH3_STATUS_INVALID_ARGUMENT\": [%d, 0],\n", (int)FLASH3_STATUS_INVALID_ARGUMENT);
  printf("\"enum.FLASH3_STATUS_NOT_SUPPORTED\": [%d, 0],\n", (int)FLASH3_STATUS_NOT_SUPPORTED);
  printf("\"enum.FLASH3_STATUS_NO_DEVICE\": [%d, 0],\n", (int)FLASH3_STATUS_NO_DEVICE);
  printf("\"enum.FLASH3_STATUS_CUDA_ERROR\": [%d, 0],\n", (int)FLASH3_STATUS_CUDA_ERROR);
  printf("\"enum.FLASH3_STATUS_INTERNAL_ERROR\": [%d, 0],\n", (int)FLASH3_STATUS_INTERNAL_ERROR);
  printf("\"define.FLASH3_MAX_RANK\": [%d, 0]\n}\n", (int)FLASH3_MAX_RANK);
  return 0;
}
"""


def _ctypes_layout():
    """What the C probe prints, computed from the ctypes mirror."""
    out = {
        "sizeof.flash3_tensor": [ctypes.sizeof(Flash3Tensor), ctypes.alignment(Flash3Tensor)],
        "sizeof.flash3_attention_params": [ctypes.sizeof(Flash3Params), ctypes.alignment(Flash3Params)],
        "define.FLASH3_MAX_RANK": [FLASH3_MAX_RANK, 0],
    }
    for cname, cls in (("flash3_tensor", Flash3Tensor), ("flash3_attention_params", Flash3Params)):
        for name, ctype in cls._fields_:
            out[f"{cname}.{name}"] = [getattr(cls, name).offset, ctypes.sizeof(ctype)]
    enum = {"FLASH3_DTYPE_FLOAT16": DTYPE["float16"], "FLASH3_DTYPE_BFLOAT16": DTYPE["bfloat16"],
            "FLASH3_DTYPE_FLOAT32": DTYPE["float32"], "FLASH3_DTYPE_FLOAT8_E4M3": DTYPE["float8_e4m3fn"],
            "FLASH3_DTYPE_INT32": DTYPE["int32"]}
    enum.update({name: code for code, name in STATUS_NAMES.items()})
    for name, value in enum.items():
        out[f"enum.{name}"] = [value, 0]
    return out


def _c_layout(cc):
    fields = []
    for cname, cls in (("flash3_tensor", Flash3Tensor), ("flash3_attention_params", Flash3Params)):
        for name, _ in cls._fields_:
            fields.append(f"  F({cname}, {name})")
    src = _C_PROBE.replace("%(fields)s", "\n".join(fields))
    with tempfile.TemporaryDirectory() as tmp:
        c_path = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(c_path, "w") as f:
            f.write(src)
        subprocess.run([cc, "-std=c11", "-Wall", "-I", os.path.join(ROOT, "include"), c_path, "-o", exe],
                       check=True, capture_output=True, text=True)
        text = subprocess.run([exe], check=True, capture_output=True, text=True).stdout
    return json.loads(text)


def selftest(lib_path=None):
    failures = 0

    def report(ok, what):
        nonlocal failures
        failures += 0 if ok else 1
        print(f"[{'PASS' if ok else 'FAIL'}] {what}")

    # 1. The ctypes mirror against the C header, compiled by the C compiler.
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        report(False, "no C compiler (cc/gcc/clang) to compile the header probe")
    else:
        try:
            c = _c_layout(cc)
        except subprocess.CalledProcessError as e:
            c = None
            report(False, f"compiling/running the header probe failed:\n{e.stderr}")
        if c is not None:
            py = _ctypes_layout()
            bad = [k for k in sorted(set(c) | set(py)) if c.get(k) != py.get(k)]
            for k in bad:
                print(f"    {k}: C {c.get(k)} vs ctypes {py.get(k)}")
            size = c.get("sizeof.flash3_attention_params", ["?"])[0]
            report(not bad, f"ctypes Flash3Params / Flash3Tensor match flash3_c.h ({len(c)} offsets, sizes and enum "
                            f"values compared with {os.path.basename(cc)}; sizeof(params) = {size})")

    # 2. The anchor table against its markdown source.
    if os.path.exists(anchors.ANCHOR_SOURCE):
        md = anchors.parse_markdown()
        ours = {(r[0], r[1], r[2]): tuple(float(x) if not isinstance(x, str) else x for x in r) for r in anchors._ROWS}
        bad = [k for k in sorted(set(md) | set(ours)) if md.get(k) != ours.get(k)]
        for k in bad:
            print(f"    {k}: markdown {md.get(k)} vs anchors.py {ours.get(k)}")
        report(not bad and len(ours) == 36, f"benchmarks/anchors.py matches {anchors.ANCHOR_SOURCE} ({len(ours)} rows)")
    else:
        print(f"[SKIP] {anchors.ANCHOR_SOURCE} not present; anchors.py not re-checked")

    # 3. Rendering, with made-up rows.
    fake = [dict(hdim=128, causal=False, seqlen=4096, status="ok", flash3_tflops=650.0, max_abs_diff=3e-3,
                 peers={"cudnn": dict(tflops=600.0)}),
            dict(hdim=64, causal=True, seqlen=512, status="skipped", message="no kernel", peers={})]
    for r in fake:
        add_verdict(r)
    text = render_markdown(fake, ["cudnn"], {"name": "test"}, "fwd")
    report("| 128 | full | 4096 | 650.0 | 600.0 | 1.08 | 1.18 |" in text and "skipped: no kernel" in text,
           "markdown rendering")

    # 4. The library, if one is built here (it must load and agree on the struct size; no GPU call is made).
    path = find_library(lib_path)
    if path is None:
        print("[SKIP] no libflash3.so found (build/*/libflash3.so*; --lib PATH): library ABI not checked")
    else:
        try:
            lib = Flash3Lib(path)
            p = lib.new_params()
            ok = lib.api_version == 1 and p.window_left == -1 and p.window_right == -1
            report(ok, f"{path}: loads, flash3 {lib.version}, C API {lib.api_version}, params_init struct_size "
                       f"{p.struct_size}, window ({p.window_left}, {p.window_right})")
        except (OSError, AttributeError, RuntimeError) as e:
            report(False, f"{path}: {e}")

    print(f"selftest: {'all passed' if failures == 0 else f'{failures} FAILED'}")
    return 0 if failures == 0 else 1


# ---- the comparison -----------------------------------------------------------------------------------------------

def gpu_info(torch):
    info = {"name": torch.cuda.get_device_name(), "sm_clock": "n/a", "max_sm_clock": "n/a", "power_limit": "n/a",
            "source": "torch"}
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            # Select the GPU by UUID: nvidia-smi's numbering need not match CUDA's.
            idx = str(torch.cuda.current_device())
            uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", "") or "")
            if uuid:
                idx = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
            out = subprocess.run([smi, f"--id={idx}", "--query-gpu=name,clocks.sm,clocks.max.sm,power.limit",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                name, sm, max_sm, power = [x.strip() for x in out.stdout.strip().splitlines()[0].split(",")][:4]
                info.update(name=name, sm_clock=sm, max_sm_clock=max_sm, power_limit=power, source="nvidia-smi")
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            pass
    return info


def make_timer(torch, args):
    """fn -> median ms. triton's do_bench (L2 flushed before every call) or CUDA events with the same flush."""
    try:
        import triton.testing

        def bench(fn):
            return float(triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms, return_mode="median"))

        return bench, f"triton.testing.do_bench(warmup={args.warmup_ms} ms, rep={args.rep_ms} ms, median)"
    except ImportError:
        flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")

        def bench(fn):
            for _ in range(10):
                fn()
            starts = [torch.cuda.Event(enable_timing=True) for _ in range(100)]
            ends = [torch.cuda.Event(enable_timing=True) for _ in range(100)]
            for s, e in zip(starts, ends):
                flush.zero_()
                s.record()
                fn()
                e.record()
            torch.cuda.synchronize()
            return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))

        return bench, "CUDA events, median of 100 calls, 256 MiB L2 flush before each (triton not installed)"


def fwd_flops(batch, heads, seqlen, hdim, causal):
    f = 4.0 * batch * heads * seqlen * seqlen * hdim
    return f / 2 if causal else f


def sdpa_peer(torch, backend_name, qt, kt, vt, causal):
    """A callable running SDPA on one backend, and how it was fed. Tries the (b, h, s, d) views of the (b, s, h, d)
    tensors first; a backend that refuses them gets contiguous copies (made once, outside the timing)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    backend = getattr(SDPBackend, backend_name)
    errors = []
    for layout in ("strided views", "contiguous copies"):
        if layout == "contiguous copies":
            qt, kt, vt = qt.contiguous(), kt.contiguous(), vt.contiguous()

        def fn(q=qt, k=kt, v=vt):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

        try:
            out = fn()
            torch.cuda.synchronize()
            return fn, out, layout, None
        except RuntimeError as e:
            errors.append(f"{layout}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    return None, None, None, "; ".join(errors)


def run_fwd_config(torch, lib, bench, args, hdim, causal, seqlen, peers):
    batch, heads = TOTAL_TOKENS // seqlen, HIDDEN // hdim
    row = dict(hdim=hdim, causal=causal, seqlen=seqlen, batch=batch, heads=heads, status="ok", message="",
               flops=fwd_flops(batch, heads, seqlen, hdim, causal), peers={})
    dtype = torch.bfloat16
    q, k, v = (torch.randn(batch, seqlen, heads, hdim, dtype=dtype, device="cuda") for _ in range(3))
    out = torch.empty_like(q)
    lse = torch.empty(batch, heads, seqlen, dtype=torch.float32, device="cuda")

    p = lib.new_params()
    set_tensor(p.q, q)
    set_tensor(p.k, k)
    set_tensor(p.v, v)
    set_tensor(p.out, out)
    if not args.no_lse:
        set_tensor(p.lse, lse)
    p.causal = 1 if causal else 0
    p.stream = torch.cuda.current_stream().cuda_stream
    workspace = None
    try:
        ws = lib.forward_workspace_size(p)
        workspace = torch.empty(max(ws, 1), dtype=torch.uint8, device="cuda")
        p.workspace = workspace.data_ptr() if ws > 0 else None
        p.workspace_bytes = ws
        out.fill_(float("nan"))  # every element must be written
        lib.forward(p)
        torch.cuda.synchronize()
    except Flash3Error as e:
        row["status"] = "skipped" if e.status == STATUS_NOT_SUPPORTED else "error"
        row["message"] = str(e)
        return row

    # Correctness against SDPA (whatever backend PyTorch picks; math as the fallback of last resort).
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)
    diff = (out.float() - ref.float()).abs()
    row["max_abs_diff"] = float(diff.max()) if not torch.isnan(diff).any() else float("nan")
    row["unwritten_or_nan"] = int(torch.isnan(out).sum())
    if not (row["max_abs_diff"] <= MISMATCH_TOL):
        row["status"] = "MISMATCH"
    del diff, ref

    def run_flash3():
        lib.forward(p)

    try:
        row["flash3_ms"] = bench(run_flash3)
    except Flash3Error as e:
        row["status"] = "error"
        row["message"] = f"while timing: {e}"
        return row
    row["flash3_tflops"] = row["flops"] / (row["flash3_ms"] * 1e-3) / 1e12

    for peer in peers:
        fn, peer_out, layout, err = sdpa_peer(torch, PEER_BACKENDS[peer], qt, kt, vt, causal)
        if fn is None:
            row["peers"][peer] = dict(error=err)
            continue
        peer_diff = float((peer_out.transpose(1, 2).float() - out.float()).abs().max())
        del peer_out
        try:
            ms = bench(fn)
        except RuntimeError as e:
            row["peers"][peer] = dict(error=f"while timing: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        row["peers"][peer] = dict(ms=ms, tflops=row["flops"] / (ms * 1e-3) / 1e12, layout=layout,
                                  max_abs_diff_vs_flash3=peer_diff)
    del workspace
    return row


def add_verdict(row):
    a = anchors.anchor("fwd", row["hdim"], row["causal"], row["seqlen"])
    row["fa3_cudnn_anchor"] = a["ratio"] if a else None
    row["fa3_anchor_tflops"] = a["fa3"] if a else None
    cud = row.get("peers", {}).get("cudnn", {})
    if row.get("flash3_tflops") and cud.get("tflops"):
        row["flash3_cudnn"] = row["flash3_tflops"] / cud["tflops"]
    else:
        row["flash3_cudnn"] = None
    if row["status"] not in ("ok", "MISMATCH"):
        row["verdict"] = row["status"]
    elif row["flash3_cudnn"] is None or a is None:
        row["verdict"] = "n/a"
    elif row["flash3_cudnn"] >= a["ratio"]:
        row["verdict"] = "yes"
    elif row["flash3_cudnn"] >= a["ratio"] * (1 - anchors.NOISE):
        row["verdict"] = "no (within 3% noise)"
    else:
        row["verdict"] = "no"
    if row["status"] == "MISMATCH":
        row["verdict"] += ", MISMATCH"


def _f(x, spec):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def render_markdown(rows, peers, info, mode, timer_desc=""):
    extra = [p for p in peers if p != "cudnn"]
    head = ["hdim", "mask", "seqlen", "flash3 TFLOPS", "cuDNN TFLOPS", "flash3/cuDNN", "FA3/cuDNN (anchor)",
            "verdict (flash3/cuDNN >= FA3/cuDNN ?)", "max abs diff vs SDPA"]
    head += [f"{PEER_LABELS[p]} TFLOPS" for p in extra]
    lines = [f"# flash3 vs peers ({mode}, bf16, batch = {TOTAL_TOKENS}/seqlen, heads = {HIDDEN}/hdim)", "",
             f"GPU: {info.get('name')}; SM clock {info.get('sm_clock', 'n/a')} "
             f"(max {info.get('max_sm_clock', 'n/a')}); power limit {info.get('power_limit', 'n/a')}"]
    for key in ("flash3", "torch", "cudnn", "timer", "date"):
        if info.get(key):
            lines.append(f"{key}: {info[key]}")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        mask = "causal" if r["causal"] else "full"
        if r["status"] in ("skipped", "error"):
            lines.append(f"| {r['hdim']} | {mask} | {r['seqlen']} | {r['status']}: {r.get('message', '')} |")
            continue
        cud = r["peers"].get("cudnn", {})
        cells = [str(r["hdim"]), mask, str(r["seqlen"]), _f(r.get("flash3_tflops"), ".1f"),
                 _f(cud.get("tflops"), ".1f") if "tflops" in cud else ("n/a" if not cud else "failed"),
                 _f(r.get("flash3_cudnn"), ".2f"), _f(r.get("fa3_cudnn_anchor"), ".2f"), r.get("verdict", ""),
                 _f(r.get("max_abs_diff"), ".1e") + (" MISMATCH" if r["status"] == "MISMATCH" else "")]
        for p in extra:
            cells.append(_f(r["peers"].get(p, {}).get("tflops"), ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    notes = []
    for r in rows:
        for p, d in r.get("peers", {}).items():
            if d.get("layout") == "contiguous copies":
                notes.append(f"- {PEER_LABELS[p]} refused the strided (b, h, s, d) views for hdim {r['hdim']} "
                             f"{'causal' if r['causal'] else 'full'} seqlen {r['seqlen']}: timed on contiguous copies")
            if "error" in d:
                notes.append(f"- {PEER_LABELS[p]} refused hdim {r['hdim']} {'causal' if r['causal'] else 'full'} "
                             f"seqlen {r['seqlen']}: {d['error']}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _json_safe(x):
    """NaN and inf are not JSON: they become null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="fwd", choices=["fwd", "bwd", "fwdbwd"])
    ap.add_argument("--lib", help="path of libflash3.so (default: $FLASH3_LIB, else newest build/*/libflash3.so*)")
    ap.add_argument("--peers", default="cudnn", help="comma list of cudnn, flash, efficient (default cudnn)")
    ap.add_argument("--quick", action="store_true", help=f"seqlen {','.join(map(str, QUICK_SEQLENS))} only")
    ap.add_argument("--seqlen", help="comma list (default 512..16384)")
    ap.add_argument("--hdim", help="comma list (default 64,128,256)")
    ap.add_argument("--causal", default="0,1", help="comma list of 0/1")
    ap.add_argument("--no-lse", action="store_true", help="do not ask flash3 for the LSE (FA3 always writes it)")
    ap.add_argument("--warmup-ms", type=int, default=25)
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument("--out", default="compare-fwd.md", help="markdown output; the JSON goes beside it (.json)")
    ap.add_argument("--selftest", action="store_true", help="check the ctypes mirror against flash3_c.h (no GPU)")
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest(args.lib)
    if args.mode != "fwd":
        print(f"compare.py: --mode {args.mode}: flash3's backward kernel is not built yet; only --mode fwd compares")
        return 3
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEER_BACKENDS:
            ap.error(f"--peers: unknown peer '{p}' (expected {', '.join(PEER_BACKENDS)})")
    if args.seqlen:
        seqlens = [int(x) for x in args.seqlen.split(",")]
    else:
        seqlens = list(QUICK_SEQLENS if args.quick else SEQLENS)
    hdims = [int(x) for x in args.hdim.split(",")] if args.hdim else list(HDIMS)
    causals = [bool(int(x)) for x in args.causal.split(",")]

    try:
        import torch
    except ImportError as e:
        print(f"compare.py: PyTorch is not importable ({e}); run this on the GPU machine")
        return 2
    if not torch.cuda.is_available():
        print("compare.py: no CUDA device found (torch.cuda.is_available() is False)")
        return 2
    path = find_library(args.lib)
    if path is None:
        print("compare.py: libflash3.so not found (build it, or pass --lib PATH / set FLASH3_LIB)")
        return 2
    try:
        lib = Flash3Lib(path)
    except (OSError, AttributeError, RuntimeError) as e:
        print(f"compare.py: cannot use {path}: {e}")
        return 2

    bench, timer_desc = make_timer(torch, args)
    info = gpu_info(torch)
    info.update(flash3=f"{lib.version} ({path})", torch=torch.__version__,
                cudnn=str(torch.backends.cudnn.version()), timer=timer_desc,
                date=datetime.datetime.now().isoformat(timespec="seconds"))
    torch.manual_seed(0)

    rows = []
    configs = [(h, c, s) for h in hdims for c in causals for s in seqlens]
    for i, (hdim, causal, seqlen) in enumerate(configs):
        print(f"compare.py: [{i + 1}/{len(configs)}] hdim {hdim} {'causal' if causal else 'full'} seqlen {seqlen}",
              file=sys.stderr, flush=True)
        try:
            row = run_fwd_config(torch, lib, bench, args, hdim, causal, seqlen, peers)
        except torch.cuda.OutOfMemoryError as e:
            row = dict(hdim=hdim, causal=causal, seqlen=seqlen, status="error", message=f"out of memory: {e}",
                       peers={})
        add_verdict(row)
        rows.append(row)
        torch.cuda.empty_cache()

    text = render_markdown(rows, peers, info, args.mode, timer_desc)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(_json_safe(dict(mode=args.mode, gpu=info, peers=peers, mismatch_tol=MISMATCH_TOL, rows=rows)), f,
                  indent=1, default=str)
    print(f"compare.py: wrote {args.out} and {json_path}", file=sys.stderr)
    print(text)
    bad = [r for r in rows if r["status"] in ("MISMATCH", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
