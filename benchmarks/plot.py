#!/usr/bin/env python3
"""Plots a compare.py JSON as TFLOPS vs seqlen, one panel per (head dim, mask), like the FA3 paper's figures.

Usage: python3 benchmarks/plot.py docs/benchmarks/h100-fwd.json [--out docs/benchmarks/h100-fwd.png]
Draws flash3 and every peer in the JSON (measured in the same process), plus FA3's published-anchor TFLOPS from
../shared/reference/h100-anchors.md (same H100 model, another process: a dashed line, labelled as an anchor).
Needs matplotlib (pip install matplotlib); no GPU.
"""
import argparse
import json
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--out", help="PNG path (default: the JSON path with .png)")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 2
    with open(a.json) as f:
        data = json.load(f)
    rows = [r for r in data["rows"] if r.get("status") == "ok"]
    if not rows:
        print("plot.py: no measured rows in " + a.json, file=sys.stderr)
        return 1
    hdims = sorted({r["hdim"] for r in rows})
    masks = [False, True]
    fig, axes = plt.subplots(len(masks), len(hdims), figsize=(4.6 * len(hdims), 3.8 * len(masks)), squeeze=False)
    peers = sorted({p for r in rows for p in r.get("peers", {})})
    for i, causal in enumerate(masks):
        for j, hdim in enumerate(hdims):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["hdim"] == hdim and bool(r["causal"]) == causal),
                         key=lambda r: r["seqlen"])
            if not sel:
                ax.set_visible(False)
                continue
            xs = [r["seqlen"] for r in sel]
            ax.plot(xs, [r["flash3_tflops"] for r in sel], "o-", color="tab:red", label="flash3")
            for k, peer in enumerate(peers):
                ys = [r["peers"].get(peer, {}).get("tflops") for r in sel]
                if any(y is not None for y in ys):
                    ax.plot(xs, ys, "s-", color=f"C{k}", label=f"{peer} (PyTorch SDPA)")
            fa3 = [r.get("fa3_anchor_tflops") for r in sel]
            if any(y is not None for y in fa3):
                ax.plot(xs, fa3, "^--", color="gray", label="FA3 (published anchor)")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x // 1024}k" if x >= 1024 else str(x) for x in xs])
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TFLOPS")
            ax.set_ylim(bottom=0)
            ax.set_title(f"hdim {hdim}, {'causal' if causal else 'full'}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    gpu = data.get("gpu", {})
    gpu_name = gpu.get("name", "GPU") if isinstance(gpu, dict) else str(gpu)
    fig.suptitle(f"Attention forward, bf16, {gpu_name} (batch = 16384/seqlen, heads = 2048/hdim)")
    fig.tight_layout()
    out = a.out or os.path.splitext(a.json)[0] + ".png"
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
