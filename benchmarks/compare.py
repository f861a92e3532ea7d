#!/usr/bin/env python3
"""flash3 against its peers, in one PyTorch process on one GPU: forward, backward and forward + backward.

flash3 is called through its C ABI (include/flash3/flash3_c.h, loaded with ctypes from libflash3.so); the peers are
PyTorch SDPA's cuDNN, flash (FA2) and memory-efficient backends (--peers), run on the same tensors and timed with the
same timer. Configs follow the FA3 paper and the anchors (benchmarks/anchors.py): bf16, batch = 16384 / seqlen,
heads = 2048 / hdim, layout (b, s, h, d) (SDPA gets the (b, h, s, d) views of the same memory), FLOPs 4*b*h*s^2*d
(/2 causal), backward 2.5x and forward + backward 3.5x the forward's (FA3's convention).

Modes (--mode, a comma list):
  fwd     the forward
  bwd     the backward alone: flash3_backward on the forward's out/lse; for the peers, torch.autograd.grad of an
          SDPA output computed once (retain_graph=True), leaves = the (b, h, s, d) views, so only SDPA's backward runs
  fwdbwd  forward then backward, each timed call doing both
Before timing, flash3's output is checked against SDPA (max abs diff) and its dq/dk/dv against SDPA's autograd
gradients (relative L2 error); outputs are poisoned with NaN first, so unwritten elements show. Times are
triton.testing.do_bench medians (it zeroes a 256 MiB buffer before every call, flushing the L2), or CUDA-event
medians of 100 calls with the same flush when triton is missing. A mode flash3 does not support yet (the backward
kernel before it lands) shows as "not supported" in flash3's column; the peers are still measured.

  python3 benchmarks/compare.py --mode fwd,bwd,fwdbwd --out-dir docs/benchmarks   # full sweep, all peers
  python3 benchmarks/compare.py --quick                 # 12 configs (seqlen 1k, 4k)
  python3 benchmarks/compare.py --selftest              # no GPU, no torch: the ctypes struct against the C header

Output per mode: <gpu>-<mode>.md (markdown table), .json and .png (TFLOPS vs seqlen, one panel per head dim and
mask; needs matplotlib) in --out-dir, <gpu> like h100; the tables are printed last.
Exit status: 0 ok (rows flash3 does not support are not failures); 1 a MISMATCH or a flash3 error; 2 no GPU /
no torch / no library.
flash3 against its peers, in one PyTorch process on one GPU.

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
import importlib.util
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
MISMATCH_TOL = 2e-2  # forward: max |flash3 - SDPA| beyond this is flagged
GRAD_TOL = 2e-2  # backward: ||flash3 - SDPA|| / ||SDPA|| of dq, dk or dv beyond this is flagged
MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
PEER_BACKENDS = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}
PEER_LABELS = {"cudnn": "cuDNN", "flash": "FA2 (SDPA flash)", "efficient": "SDPA efficient"}

# ---- the C ABI (python/flash3/_lib.py's mirror; --selftest checks it field by field against flash3_c.h) ------------

import c_abi  # noqa: E402  (the package's ctypes mirror of flash3_c.h, loaded by path)

FLASH3_MAX_RANK = c_abi.MAX_RANK
C_API_VERSION = c_abi.C_API_VERSION  # FLASH3_C_API_VERSION the mirror matches (--selftest checks it against the header)
DTYPE = {"float16": 0, "bfloat16": 1, "float32": 2, "float8_e4m3fn": 3, "int32": 4}
STATUS_NAMES = {0: "FLASH3_STATUS_SUCCESS", 1: "FLASH3_STATUS_INVALID_ARGUMENT", 2: "FLASH3_STATUS_NOT_SUPPORTED",
                3: "FLASH3_STATUS_NO_DEVICE", 4: "FLASH3_STATUS_CUDA_ERROR", 5: "FLASH3_STATUS_INTERNAL_ERROR"}
STATUS_SUCCESS = 0
STATUS_NOT_SUPPORTED = 2
Flash3Tensor = c_abi.Tensor
Flash3Params = c_abi.Params


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

    def backward_workspace_size(self, params):
        n = ctypes.c_int64(0)
        self.check(self.lib.flash3_backward_workspace_size(ctypes.byref(params), ctypes.byref(n)))
        return n.value

    def backward(self, params):
        self.check(self.lib.flash3_backward(ctypes.byref(params)))


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
  printf("\"define.FLASH3_C_API_VERSION\": [%d, 0],\n", (int)FLASH3_C_API_VERSION);
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
        "define.FLASH3_C_API_VERSION": [C_API_VERSION, 0],
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
        md_dec = anchors.parse_decode_markdown()
        ours_dec = {k: tuple(float(v[f]) for f in ("fa3", "fa3_paged", "cudnn", "fa2")) for k, v in
                    anchors.DECODE.items()}
        report(md_dec == ours_dec and len(ours_dec) == 9,
               f"anchors.DECODE matches the decode table of the markdown ({len(md_dec)} rows there)")
    else:
        print(f"[SKIP] {anchors.ANCHOR_SOURCE} not present; anchors.py not re-checked")

    # 3. Rendering, with made-up rows.
    fake = [dict(mode="fwd", hdim=128, causal=False, seqlen=4096, status="ok", flash3_tflops=650.0, max_abs_diff=3e-3,
                 peers={"cudnn": dict(tflops=600.0), "flash": dict(error="refused")}),
            dict(mode="fwd", hdim=64, causal=True, seqlen=512, status="skipped", message="no kernel",
                 peers={"cudnn": dict(tflops=200.0)})]
    for r in fake:
        add_verdict(r)
    text = render_markdown(fake, ["cudnn", "flash"], {"name": "test"}, "fwd")
    report("| 128 | full | 4096 | 650.0 | 600.0 | failed | 1.08 | 1.18 | no |" in text
           and "| 64 | causal | 512 | not supported | 200.0 | n/a |" in text and "- flash3 no kernel" in text,
           "markdown rendering (fwd)")
    fake_bwd = [dict(mode="bwd", hdim=128, causal=True, seqlen=2048, status="ok", flash3_tflops=420.0,
                     grad_rel_l2=dict(dq=3e-3, dk=4e-3, dv=2e-3), peers={"cudnn": dict(tflops=357.0)})]
    for r in fake_bwd:
        add_verdict(r)
    text = render_markdown(fake_bwd, ["cudnn"], {"name": "test"}, "bwd")
    report("| 128 | causal | 2048 | 420.0 | 357.0 | 1.18 | 1.16 | yes | dq/dk/dv 3e-03/4e-03/2e-03 |" in text,
           "markdown rendering (bwd)")
    a = anchors.anchor("fwdbwd", 128, False, 4096)
    report(a is not None and abs(a["fa3"] - 3.5 / (1 / 703 + 2.5 / 539)) < 1e-9,
           "derived forward + backward anchor (3.5 / (1/fwd + 2.5/bwd))")
    report(gpu_tag("NVIDIA H100 80GB HBM3") == "h100" and gpu_tag("NVIDIA H200") == "h200", "GPU file-name tags")

    # 3b. The plot, with made-up rows (needs matplotlib; skipped without it).
    have_mpl = importlib.util.find_spec("matplotlib") is not None
    if not have_mpl:
        print("[SKIP] matplotlib not installed: plot not drawn")
    if have_mpl:
        import plot
        with tempfile.TemporaryDirectory() as tmp:
            rows = [dict(mode="bwd", hdim=h, causal=c, seqlen=s, status="skipped", peers={
                "cudnn": dict(tflops=300.0 + s / 100), "flash": dict(tflops=250.0)}) for h in (64, 128)
                for c in (False, True) for s in (1024, 4096)]
            for r in rows:
                add_verdict(r)
            png = plot.plot(dict(mode="bwd", gpu={"name": "test GPU"}, rows=rows), os.path.join(tmp, "t.png"))
            report(png is not None and os.path.getsize(png) > 10000, "plot of a bwd JSON whose flash3 rows are "
                                                                     "not supported (peers only)")

    # 4. The library, if one is built here (it must load and agree on the struct size; no GPU call is made).
    path = find_library(lib_path)
    if path is None:
        print("[SKIP] no libflash3.so found (build/*/libflash3.so*; --lib PATH): library ABI not checked")
    else:
        try:
            lib = Flash3Lib(path)
            p = lib.new_params()
            ok = lib.api_version == C_API_VERSION and p.window_left == -1 and p.window_right == -1
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
            out = subprocess.run([smi, f"--id={idx}",
                                  "--query-gpu=name,clocks.sm,clocks.max.sm,power.limit,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip():
                name, sm, max_sm, power, driver = [x.strip() for x in
                                                   out.stdout.strip().splitlines()[0].split(",")][:5]
                info.update(name=name, sm_clock=sm, max_sm_clock=max_sm, power_limit=power, driver=driver,
                            source="nvidia-smi")
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


MODE_FLOPS = {"fwd": 1.0, "bwd": 2.5, "fwdbwd": 3.5}  # FA3's convention: backward 2.5x the forward's FLOPs


def fwd_flops(batch, heads, seqlen, hdim, causal):
    f = 4.0 * batch * heads * seqlen * seqlen * hdim
    return f / 2 if causal else f


def _first_line(e):
    text = str(e)
    return text.splitlines()[0] if text else type(e).__name__


def rel_l2(a, b):
    """||a - b|| / ||b|| in fp32 (NaN if a has NaNs)."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class Flash3Runner:
    """flash3 on one config: forward and backward parameter blocks over the same tensors, workspaces allocated once."""

    def __init__(self, torch, lib, t, causal, write_lse):
        self.torch, self.lib = torch, lib
        stream = torch.cuda.current_stream().cuda_stream
        self.pf = lib.new_params()
        for name in ("q", "k", "v", "out"):
            set_tensor(getattr(self.pf, name), t[name])
        if write_lse:
            set_tensor(self.pf.lse, t["lse"])
        self.pf.causal = 1 if causal else 0
        self.pf.stream = stream
        ws = lib.forward_workspace_size(self.pf)
        self.fwd_ws = torch.empty(max(ws, 1), dtype=torch.uint8, device="cuda")
        self.pf.workspace = self.fwd_ws.data_ptr() if ws > 0 else None
        self.pf.workspace_bytes = ws
        self.pb = None
        self.t = t
        self.causal = causal

    def forward(self):
        self.lib.forward(self.pf)

    def prepare_backward(self):
        """Raises Flash3Error (NOT_SUPPORTED while the backward kernel is not built)."""
        pb = self.lib.new_params()
        for name in ("q", "k", "v", "out", "lse", "dout", "dq", "dk", "dv"):
            set_tensor(getattr(pb, name), self.t[name])
        pb.causal = self.pf.causal
        pb.stream = self.pf.stream
        ws = self.lib.backward_workspace_size(pb)
        self.bwd_ws = self.torch.empty(max(ws, 1), dtype=self.torch.uint8, device="cuda")
        pb.workspace = self.bwd_ws.data_ptr() if ws > 0 else None
        pb.workspace_bytes = ws
        self.pb = pb

    def backward(self):
        self.lib.backward(self.pb)

    def forward_backward(self):
        self.lib.forward(self.pf)
        self.lib.backward(self.pb)


def sdpa_forward_peer(torch, backend_name, qt, kt, vt, causal):
    """A callable running SDPA's forward on one backend, and how it was fed. Tries the (b, h, s, d) views of the
    (b, s, h, d) tensors first; a backend that refuses them gets contiguous copies (made once, outside the timing)."""
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
            with torch.no_grad():
                out = fn()
            torch.cuda.synchronize()
            return fn, out, layout, None
        except RuntimeError as e:
            errors.append(f"{layout}: {_first_line(e)}")
    return None, None, None, "; ".join(errors)


def sdpa_backward_peer(torch, backend_name, qt, kt, vt, dout_t, causal):
    """Autograd through SDPA on one backend: (bwd_fn, fwdbwd_fn, grads in (b, h, s, d), layout, error).

    The leaves are the (b, h, s, d) views of the same tensors flash3 reads (or contiguous copies, if the backend
    refuses the views), so the graph holds SDPA's backward node alone: bwd_fn times exactly the backward kernel(s),
    run on a forward computed once (retain_graph=True); fwdbwd_fn runs forward + backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    import torch.nn.functional as F

    backend = getattr(SDPBackend, backend_name)
    errors = []
    for layout in ("strided views", "contiguous copies"):
        leaves = [x.detach() for x in (qt, kt, vt)]
        grad = dout_t
        if layout == "contiguous copies":
            leaves = [x.contiguous() for x in leaves]
            grad = dout_t.contiguous()
        for x in leaves:
            x.requires_grad_(True)
        try:
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(*leaves, is_causal=causal)
            grads = torch.autograd.grad(out, leaves, grad, retain_graph=True)
            torch.cuda.synchronize()
        except RuntimeError as e:
            errors.append(f"{layout}: {_first_line(e)}")
            continue

        def bwd_fn(out=out, leaves=leaves, grad=grad):
            return torch.autograd.grad(out, leaves, grad, retain_graph=True)

        def fwdbwd_fn(leaves=leaves, grad=grad):
            with sdpa_kernel(backend):
                o = F.scaled_dot_product_attention(*leaves, is_causal=causal)
            return torch.autograd.grad(o, leaves, grad)

        return bwd_fn, fwdbwd_fn, grads, layout, None
    return None, None, None, None, "; ".join(errors)


def _time(bench, fn):
    """(ms, None) or (None, error text)."""
    try:
        return bench(fn), None
    except (RuntimeError, Flash3Error) as e:
        return None, f"while timing: {_first_line(e)}"


def run_config(torch, lib, bench, args, hdim, causal, seqlen, modes, peers):
    """Every requested mode of one (hdim, mask, seqlen), on one set of tensors: {mode: row}."""
    batch, heads = TOTAL_TOKENS // seqlen, HIDDEN // hdim
    flops = fwd_flops(batch, heads, seqlen, hdim, causal)
    rows = {m: dict(mode=m, hdim=hdim, causal=causal, seqlen=seqlen, batch=batch, heads=heads, status="ok",
                    message="", flops=flops * MODE_FLOPS[m], peers={}) for m in modes}
    need_bwd = any(m != "fwd" for m in modes)
    dtype = torch.bfloat16
    shape = (batch, seqlen, heads, hdim)
    t = {name: torch.randn(shape, dtype=dtype, device="cuda") for name in ("q", "k", "v")}
    t["out"] = torch.empty(shape, dtype=dtype, device="cuda")
    t["lse"] = torch.empty(batch, heads, seqlen, dtype=torch.float32, device="cuda")
    if need_bwd:
        t["dout"] = torch.randn(shape, dtype=dtype, device="cuda")
        for name in ("dq", "dk", "dv"):
            t[name] = torch.empty(shape, dtype=dtype, device="cuda")
    view = {name: x.transpose(1, 2) for name, x in t.items() if x.dim() == 4}  # (b, h, s, d)

    def flash3_fail(mode_list, status, message):
        for m in mode_list:
            rows[m]["status"] = status
            rows[m]["message"] = message

    # 1. flash3's forward, checked against SDPA (whatever backend PyTorch picks).
    runner = None
    try:
        runner = Flash3Runner(torch, lib, t, causal, write_lse=need_bwd or not args.no_lse)
        t["out"].fill_(float("nan"))  # every element must be written
        runner.forward()
        torch.cuda.synchronize()
    except Flash3Error as e:
        status = "skipped" if e.status == STATUS_NOT_SUPPORTED else "error"
        flash3_fail(modes, status, ("not supported: " if status == "skipped" else "") + str(e))
        runner = None
    if runner is not None:
        with torch.no_grad():
            ref = torch.nn.functional.scaled_dot_product_attention(view["q"], view["k"], view["v"], is_causal=causal)
        diff = (t["out"].float() - ref.transpose(1, 2).float()).abs()
        max_diff = float(diff.max()) if not torch.isnan(diff).any() else float("nan")
        unwritten = int(torch.isnan(t["out"]).sum())
        del diff, ref
        for m in modes:
            rows[m]["max_abs_diff"] = max_diff
            rows[m]["unwritten_or_nan"] = unwritten
        if not (max_diff <= MISMATCH_TOL):
            flash3_fail(modes, "MISMATCH", f"forward max |flash3 - SDPA| = {max_diff:.3g} > {MISMATCH_TOL}")

    # 2. Reference gradients (SDPA, default backend) and flash3's backward, checked against them.
    ref_grads = None
    bwd_modes = [m for m in modes if m != "fwd"]
    if need_bwd:
        leaves = [view[n].detach().requires_grad_(True) for n in ("q", "k", "v")]
        out_ref = torch.nn.functional.scaled_dot_product_attention(*leaves, is_causal=causal)
        ref_grads = torch.autograd.grad(out_ref, leaves, view["dout"])
        del out_ref, leaves
    if need_bwd and runner is not None:
        try:
            runner.prepare_backward()
            for name in ("dq", "dk", "dv"):
                t[name].fill_(float("nan"))
            runner.backward()
            torch.cuda.synchronize()
        except Flash3Error as e:
            status = "skipped" if e.status == STATUS_NOT_SUPPORTED else "error"
            flash3_fail(bwd_modes, status, ("not supported: " if status == "skipped" else "") + str(e))
            runner.pb = None
        if runner.pb is not None:
            errs = {name: rel_l2(view[name], g) for name, g in zip(("dq", "dk", "dv"), ref_grads)}
            unwritten = sum(int(torch.isnan(t[n]).sum()) for n in ("dq", "dk", "dv"))
            for m in bwd_modes:
                rows[m]["grad_rel_l2"] = errs
                rows[m]["grad_unwritten_or_nan"] = unwritten
            worst = max(errs.values())
            if not (worst <= GRAD_TOL) and all(rows[m]["status"] == "ok" for m in bwd_modes):
                flash3_fail(bwd_modes, "MISMATCH", f"backward rel. L2 error vs SDPA {worst:.3g} > {GRAD_TOL}")

    # 3. Time flash3.
    fns = {}
    if runner is not None:
        fns["fwd"] = runner.forward
        if runner.pb is not None:
            fns["bwd"] = runner.backward
            fns["fwdbwd"] = runner.forward_backward
    for m in modes:
        if m in fns and rows[m]["status"] in ("ok", "MISMATCH"):
            ms, err = _time(bench, fns[m])
            if ms is None:
                flash3_fail([m], "error", err)
            else:
                rows[m]["flash3_ms"] = ms
                rows[m]["flash3_tflops"] = rows[m]["flops"] / (ms * 1e-3) / 1e12

    # 4. The peers, on the same tensors with the same timer.
    for peer in peers:
        if "fwd" in modes:
            fn, peer_out, layout, err = sdpa_forward_peer(torch, PEER_BACKENDS[peer], view["q"], view["k"],
                                                          view["v"], causal)
            if fn is None:
                rows["fwd"]["peers"][peer] = dict(error=err)
            else:
                d = dict(layout=layout)
                if runner is not None:
                    d["max_abs_diff_vs_flash3"] = float((peer_out.transpose(1, 2).float() - t["out"].float()).abs()
                                                        .max())
                del peer_out
                with torch.no_grad():
                    ms, err = _time(bench, fn)
                if ms is None:
                    d["error"] = err
                else:
                    d.update(ms=ms, tflops=rows["fwd"]["flops"] / (ms * 1e-3) / 1e12)
                rows["fwd"]["peers"][peer] = d
        if bwd_modes:
            bwd_fn, fwdbwd_fn, grads, layout, err = sdpa_backward_peer(torch, PEER_BACKENDS[peer], view["q"],
                                                                       view["k"], view["v"], view["dout"], causal)
            rel = None
            if grads is not None:
                rel = max(rel_l2(g, r) for g, r in zip(grads, ref_grads))
                del grads
            for m in bwd_modes:
                if bwd_fn is None:
                    rows[m]["peers"][peer] = dict(error=err)
                    continue
                d = dict(layout=layout, grad_rel_l2_vs_ref=rel)
                ms, terr = _time(bench, bwd_fn if m == "bwd" else fwdbwd_fn)
                if ms is None:
                    d["error"] = terr
                else:
                    d.update(ms=ms, tflops=rows[m]["flops"] / (ms * 1e-3) / 1e12)
                rows[m]["peers"][peer] = d
            del bwd_fn, fwdbwd_fn
    return rows


def add_verdict(row):
    mode = row.get("mode", "fwd")
    a = anchors.anchor(mode, row["hdim"], row["causal"], row["seqlen"])
    row["fa3_cudnn_anchor"] = a["ratio"] if a else None
    row["fa3_anchor_tflops"] = a["fa3"] if a else None
    row["cudnn_anchor_tflops"] = a["cudnn"] if a else None
    cud = row.get("peers", {}).get("cudnn", {})
    if row.get("flash3_tflops") and cud.get("tflops"):
        row["flash3_cudnn"] = row["flash3_tflops"] / cud["tflops"]
    else:
        row["flash3_cudnn"] = None
    if row["status"] not in ("ok", "MISMATCH"):
        row["verdict"] = "not supported" if row["status"] == "skipped" else row["status"]
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


def _check_cell(r):
    if r["status"] in ("skipped", "error"):
        return "-"
    if r.get("mode", "fwd") == "fwd" or "grad_rel_l2" not in r:
        cell = _f(r.get("max_abs_diff"), ".1e")
    else:
        cell = "dq/dk/dv " + "/".join(_f(r["grad_rel_l2"][n], ".0e") for n in ("dq", "dk", "dv"))
    return cell + (" MISMATCH" if r["status"] == "MISMATCH" else "")


def render_markdown(rows, peers, info, mode, timer_desc=""):
    mode_title = MODE_TITLES.get(mode, mode)
    anchor_note = {"fwd": "FA3/cuDNN (anchor)", "bwd": "FA3/cuDNN (anchor)",
                   "fwdbwd": "FA3/cuDNN (anchor, derived)"}.get(mode, "FA3/cuDNN (anchor)")
    head = ["hdim", "mask", "seqlen", "flash3 TFLOPS"] + [f"{PEER_LABELS[p]} TFLOPS" for p in peers]
    head += ["flash3/cuDNN", anchor_note, "verdict (flash3/cuDNN >= FA3/cuDNN ?)",
             "check vs SDPA" + (" (max abs diff)" if mode == "fwd" else " (rel. L2 error)")]
    lines = [f"# flash3 vs peers: {mode_title} ({mode}), bf16, batch = {TOTAL_TOKENS}/seqlen, heads = {HIDDEN}/hdim",
             "",
             f"GPU: {info.get('name')}; SM clock {info.get('sm_clock', 'n/a')} "
             f"(max {info.get('max_sm_clock', 'n/a')}); power limit {info.get('power_limit', 'n/a')}"
             + (f"; driver {info['driver']}" if info.get("driver") else "")]
    for key in ("flash3", "torch", "cuda", "cudnn", "timer", "date"):
        if info.get(key):
            lines.append(f"{key}: {info[key]}")
    lines.append(f"FLOPs: 4*b*h*s^2*d, /2 causal; x{MODE_FLOPS.get(mode, 1.0):g} for {mode} (FA3's convention)"
                 + ("; bwd times the backward alone, on a forward computed once" if mode == "bwd" else ""))
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    skip_messages = []
    for r in rows:
        mask = "causal" if r["causal"] else "full"
        if r["status"] == "skipped":
            f3 = "not supported"
            if r.get("message") and r["message"] not in skip_messages:
                skip_messages.append(r["message"])
        elif r["status"] == "error":
            f3 = "error"
        else:
            f3 = _f(r.get("flash3_tflops"), ".1f")
        cells = [str(r["hdim"]), mask, str(r["seqlen"]), f3]
        for p in peers:
            d = r.get("peers", {}).get(p, {})
            cells.append(_f(d.get("tflops"), ".1f") if "tflops" in d else ("failed" if "error" in d else "n/a"))
        cells += [_f(r.get("flash3_cudnn"), ".2f"), _f(r.get("fa3_cudnn_anchor"), ".2f"), r.get("verdict", ""),
                  _check_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"- flash3 {m}" for m in skip_messages]
    for r in rows:
        where = f"hdim {r['hdim']} {'causal' if r['causal'] else 'full'} seqlen {r['seqlen']}"
        if r["status"] == "error":
            notes.append(f"- flash3 failed at {where}: {r.get('message', '')}")
        for p, d in r.get("peers", {}).items():
            if d.get("layout") == "contiguous copies":
                notes.append(f"- {PEER_LABELS[p]} refused the strided (b, h, s, d) views at {where}: timed on "
                             "contiguous copies")
            if "error" in d:
                notes.append(f"- {PEER_LABELS[p]} failed at {where}: {d['error']}")
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


def gpu_tag(name):
    """A short file-name tag for a GPU: h100, h200, a100, ... (else the name, lower case, [a-z0-9-] only)."""
    low = (name or "gpu").lower()
    for tag in ("h100", "h200", "h20", "h800", "gh200", "b200", "a100", "l40s", "l4"):
        if tag in low.replace(" ", ""):
            return tag
    return "".join(c if c.isalnum() else "-" for c in low).strip("-") or "gpu"


def make_plot(data, png_path):
    """Draws the PNG with plot.py; returns the path, or None (with the reason printed) when it cannot."""
    try:
        import plot
        return plot.plot(data, png_path)
    except ImportError as e:
        print(f"compare.py: no plot ({e}); install matplotlib, or run benchmarks/plot.py on the JSON later",
              file=sys.stderr)
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="fwd", help="comma list of fwd, bwd, fwdbwd (default fwd)")
    ap.add_argument("--lib", help="path of libflash3.so (default: $FLASH3_LIB, else newest build/*/libflash3.so*)")
    ap.add_argument("--peers", default="cudnn,flash,efficient",
                    help="comma list of cudnn, flash, efficient (default all three)")
    ap.add_argument("--quick", action="store_true", help=f"seqlen {','.join(map(str, QUICK_SEQLENS))} only")
    ap.add_argument("--seqlen", help="comma list (default 512..16384)")
    ap.add_argument("--hdim", help="comma list (default 64,128,256)")
    ap.add_argument("--causal", default="0,1", help="comma list of 0/1")
    ap.add_argument("--no-lse", action="store_true", help="fwd: do not ask flash3 for the LSE (FA3 always writes it)")
    ap.add_argument("--warmup-ms", type=int, default=25)
    ap.add_argument("--rep-ms", type=int, default=100)
    ap.add_argument("--out-dir", default=".", help="where <gpu>-<mode>.{md,json,png} go (default: current dir)")
    ap.add_argument("--name", help="file-name prefix (default: the GPU, e.g. h100)")
    ap.add_argument("--out", help="markdown path for a single --mode (JSON and PNG beside it); overrides --out-dir")
    ap.add_argument("--no-plot", action="store_true", help="write no PNG")
    ap.add_argument("--selftest", action="store_true", help="check the ctypes mirror against flash3_c.h (no GPU)")
    args = ap.parse_args(argv)

    if args.selftest:
        return selftest(args.lib)
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    for m in modes:
        if m not in MODE_FLOPS:
            ap.error(f"--mode: unknown mode '{m}' (expected fwd, bwd, fwdbwd)")
    modes = [m for m in MODE_FLOPS if m in modes]  # canonical order, no duplicates
    if args.out and len(modes) != 1:
        ap.error("--out names one file: use it with a single --mode, or use --out-dir")
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
    info.update(flash3=f"{lib.version} ({os.path.relpath(path, ROOT)})", torch=torch.__version__,
                cuda=str(torch.version.cuda), cudnn=str(torch.backends.cudnn.version()), timer=timer_desc,
                date=datetime.datetime.now().isoformat(timespec="seconds"))
    torch.manual_seed(0)

    prefix = args.name or gpu_tag(info.get("name"))
    md_paths = {m: args.out or os.path.join(args.out_dir, f"{prefix}-{m}.md") for m in modes}
    for path in md_paths.values():
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write(m, final):
        """The markdown and JSON of one mode (rewritten after every config, so a run cut short keeps its rows)."""
        text = render_markdown(rows[m], peers, info, m, timer_desc)
        if not final:
            text += f"\n(partial: {len(rows[m])} of {len(configs)} configs so far)\n"
        with open(md_paths[m], "w") as f:
            f.write(text)
        data = _json_safe(dict(mode=m, gpu=info, peers=peers, mismatch_tol=MISMATCH_TOL, grad_tol=GRAD_TOL,
                               flops_factor=MODE_FLOPS[m], complete=final, rows=rows[m]))
        with open(os.path.splitext(md_paths[m])[0] + ".json", "w") as f:
            json.dump(data, f, indent=1, default=str)
        return text, data

    rows = {m: [] for m in modes}
    configs = [(h, c, s) for h in hdims for c in causals for s in seqlens]
    for i, (hdim, causal, seqlen) in enumerate(configs):
        print(f"compare.py: [{i + 1}/{len(configs)}] {','.join(modes)} hdim {hdim} {'causal' if causal else 'full'} "
              f"seqlen {seqlen}", file=sys.stderr, flush=True)
        try:
            got = run_config(torch, lib, bench, args, hdim, causal, seqlen, modes, peers)
        except torch.cuda.OutOfMemoryError as e:
            got = {m: dict(mode=m, hdim=hdim, causal=causal, seqlen=seqlen, status="error",
                           message=f"out of memory: {_first_line(e)}", peers={}) for m in modes}
        for m in modes:
            add_verdict(got[m])
            rows[m].append(got[m])
            if i + 1 < len(configs):
                write(m, final=False)
        torch.cuda.empty_cache()

    texts = []
    for m in modes:
        text, data = write(m, final=True)
        written = [md_paths[m], os.path.splitext(md_paths[m])[0] + ".json"]
        if not args.no_plot:
            png = make_plot(data, os.path.splitext(md_paths[m])[0] + ".png")
            if png:
                written.append(png)
        print(f"compare.py: wrote {', '.join(written)}", file=sys.stderr)
        texts.append(text)
    print("\n".join(texts))
    bad = [r for m in modes for r in rows[m] if r["status"] in ("MISMATCH", "error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
