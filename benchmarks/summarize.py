#!/usr/bin/env python3
"""A short summary of one benchmark run: flash3-bench's JSON and compare.py's JSONs in one folder.

Usage: python3 benchmarks/summarize.py OUT_DIR     (what benchmarks/run_all.sh writes; no GPU, no third-party module)
Prints, per mode: how many configs flash3 ran, its TFLOPS range, its geometric-mean ratio to cuDNN measured in the
same process against FA3's published ratio (the anchors), and each peer's best TFLOPS; then the decode rows (GB/s
against the copy ceiling and the anchors' cuDNN/FA3 decode figures).
"""
import glob
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import anchors  # noqa: E402

PEERS = (("cudnn", "cuDNN"), ("flash", "FA2"), ("efficient", "mem-eff"))


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def f(x, spec=".0f"):
    return "n/a" if x is None else format(x, spec)


def table(head, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def summarize_bench(path):
    with open(path) as fh:
        data = json.load(fh)
    dev = data.get("device", {})
    ceil = data.get("ceilings") or {}
    lines = [f"flash3-bench ({os.path.basename(path)}): {dev.get('name', '?')}, "
             f"max SM clock {dev.get('max_sm_clock_mhz', '?')} MHz, power limit {dev.get('power_limit_w', '?')} W"]
    parts = []
    for key, label, unit, div in (("bf16_gemm_tflops", "bf16 GEMM", "TFLOPS", 1), ("fp8_gemm_tflops", "FP8 GEMM",
                                  "TFLOPS", 1), ("copy_gbps", "D2D copy", "TB/s", 1000)):
        c = ceil.get(key) or {}
        parts.append(f"{label} {f(c['value'] / div, '.2f' if div > 1 else '.0f')} {unit}" if c.get("ok")
                     else f"{label} n/a")
    lines.append("ceilings: " + ", ".join(parts))
    results = data.get("results", [])
    rows = []
    for mode in ("fwd", "bwd", "fwdbwd"):
        sel = [r for r in results if r.get("mode", "fwd") == mode]
        if not sel:
            continue
        ok = [r for r in sel if r["status"] in ("ok", "check-failed") and r.get("tflops")]
        skipped = [r for r in sel if r["status"] == "skipped"]
        best = max(ok, key=lambda r: r["tflops"]) if ok else None
        rows.append([mode, len(sel), len(ok), len(skipped), len(sel) - len(ok) - len(skipped),
                     f"{min(r['tflops'] for r in ok):.0f}-{best['tflops']:.0f}" if ok else "-",
                     (f"hd{best['hdim']} {best['mask']} s{best['seqlen_q']}" if best else
                      ("not supported" if skipped else "-"))])
    if rows:
        lines.append(table(["mode", "configs", "ok", "skipped", "errors", "TFLOPS min-max", "best at"], rows))
    dec = [r for r in results if r.get("mode") == "decode"]
    if dec:
        drows = []
        for r in dec:
            a = anchors.DECODE.get((r["batch"], r["seqlen_k"])) if (r["seqlen_q"] == 1 and r["hdim"] == 128 and
                                                                     r["heads"] == 32 and r["heads_k"] == 8) else None
            ok = r["status"] in ("ok", "check-failed")
            drows.append([f"{r['batch']}", f"{r['seqlen_q']}x{r['seqlen_k']}",
                          f(r.get("kv_gbps")) if ok else r["status"], f(r.get("gbps")) if ok else "-",
                          f(r.get("pct_copy"), ".1f") if ok else "-", f(a["cudnn"]) if a else "-",
                          f(a["fa3"]) if a else "-"])
        lines.append("decode (hdim %s, heads %s/%s; GB/s; anchors: K+V GB/s of the same shapes):"
                     % (dec[0]["hdim"], dec[0]["heads"], dec[0]["heads_k"]))
        lines.append(table(["batch", "sq x sk", "flash3 K+V", "flash3 all", "% copy", "cuDNN anchor",
                            "FA3 anchor"], drows))
    return "\n".join(lines)


def summarize_compare(paths):
    rows, gpu = [], None
    order = {"fwd": 0, "bwd": 1, "fwdbwd": 2}
    datas = []
    for p in paths:
        with open(p) as fh:
            d = json.load(fh)
        if "rows" in d and d.get("mode") in order:
            datas.append(d)
    for d in sorted(datas, key=lambda d: order[d["mode"]]):
        gpu = gpu or (d.get("gpu") or {}).get("name")
        rs = d["rows"]
        ok = [r for r in rs if r.get("flash3_tflops")]
        skipped = [r for r in rs if r.get("status") == "skipped"]
        ratio = geomean([r.get("flash3_cudnn") for r in rs])
        ratios = [r["flash3_cudnn"] for r in rs if r.get("flash3_cudnn")]
        anchor = geomean([r.get("fa3_cudnn_anchor") for r in rs if r.get("flash3_cudnn")] or
                         [r.get("fa3_cudnn_anchor") for r in rs])
        wins = sum(1 for r in rs if r.get("verdict", "").startswith("yes"))
        flash3 = (f"{len(ok)}/{len(rs)} ok" + (f", {len(skipped)} not supported" if skipped else ""))
        cells = [d["mode"], flash3,
                 f"{min(r['flash3_tflops'] for r in ok):.0f}-{max(r['flash3_tflops'] for r in ok):.0f}" if ok else "-",
                 (f"{ratio:.2f} ({min(ratios):.2f}-{max(ratios):.2f})" if ratio else "n/a"), f(anchor, ".2f"),
                 f"{wins}/{len(rs)}"]
        for key, _ in PEERS:
            vals = [r.get("peers", {}).get(key, {}).get("tflops") for r in rs]
            vals = [v for v in vals if v]
            cells.append(f"{max(vals):.0f}" if vals else "-")
        rows.append(cells)
    if not rows:
        return None
    head = ["mode", "flash3", "flash3 TFLOPS", "flash3/cuDNN geomean (min-max)", "FA3/cuDNN anchor geomean",
            "configs >= FA3 margin"] + [f"{label} best" for _, label in PEERS]
    return f"compare.py ({gpu}; same process, same tensors, same timer):\n" + table(head, rows)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = argv[1]
    parts = []
    bench = sorted(glob.glob(os.path.join(out, "bench*.json")))
    for p in bench:
        try:
            parts.append(summarize_bench(p))
        except (OSError, ValueError, KeyError) as e:
            parts.append(f"{p}: unreadable ({e})")
    comp = [p for p in sorted(glob.glob(os.path.join(out, "*.json"))) if p not in bench]
    try:
        text = summarize_compare(comp)
        if text:
            parts.append(text)
    except (OSError, ValueError, KeyError) as e:
        parts.append(f"compare JSONs unreadable ({e})")
    if not parts:
        print(f"summarize.py: no results in {out}")
        return 1
    print("\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
