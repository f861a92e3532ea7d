#!/usr/bin/env python3
"""Plots a compare.py JSON as TFLOPS vs seqlen, one panel per (head dim, mask), like the FA3 paper's figures.

Usage: python3 benchmarks/plot.py docs/benchmarks/h100-bwd.json [--out docs/benchmarks/h100-bwd.png]
Draws flash3 and every peer in the JSON (measured in the same process, same tensors, same timer), plus FA3's
published-anchor TFLOPS from ../shared/reference/h100-anchors.md (same H100 model, another process: a dashed line,
labelled as an anchor; for fwdbwd derived from the forward and backward anchors). Works for any mode the JSON holds
(fwd, bwd, fwdbwd); where flash3 does not support the mode yet, the legend says so and the peers are drawn alone.
Needs matplotlib (pip install matplotlib); no GPU. compare.py calls plot() itself after writing each JSON.
"""
import argparse
import json
import os
import sys

MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwdbwd": "forward + backward"}
PEER_STYLE = {  # label, colour, marker
    "cudnn": ("cuDNN (PyTorch SDPA)", "tab:blue", "s"),
    "flash": ("FA2 (PyTorch SDPA flash)", "tab:green", "D"),
    "efficient": ("mem-efficient (PyTorch SDPA)", "tab:purple", "v"),
}


def _seq_label(x):
    return f"{x // 1024}k" if x >= 1024 and x % 1024 == 0 else str(x)


def plot(data, out):
    """Writes the PNG for one compare.py result dict; returns `out`. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    mode = data.get("mode", "fwd")
    rows = [r for r in data["rows"] if r.get("seqlen")]
    hdims = sorted({r["hdim"] for r in rows})
    masks = [m for m in (False, True) if any(bool(r["causal"]) == m for r in rows)]
    if not hdims or not masks:
        raise ValueError("no rows to plot")
    peers = [p for p in PEER_STYLE if any(p in r.get("peers", {}) for r in rows)]
    peers += sorted({p for r in rows for p in r.get("peers", {})} - set(peers))
    any_flash3 = any(r.get("flash3_tflops") for r in rows)
    skipped = [r for r in rows if r.get("status") == "skipped"]

    fig, axes = plt.subplots(len(masks), len(hdims), figsize=(4.8 * len(hdims), 3.9 * len(masks)), squeeze=False)
    for i, causal in enumerate(masks):
        for j, hdim in enumerate(hdims):
            ax = axes[i][j]
            sel = sorted((r for r in rows if r["hdim"] == hdim and bool(r["causal"]) == causal),
                         key=lambda r: r["seqlen"])
            if not sel:
                ax.set_visible(False)
                continue
            xs = [r["seqlen"] for r in sel]
            ys = [r.get("flash3_tflops") for r in sel]
            if any(y is not None for y in ys):
                ax.plot(xs, [float("nan") if y is None else y for y in ys], "o-", color="tab:red", lw=2.2,
                        zorder=5)
            for peer in peers:
                label, color, marker = PEER_STYLE.get(peer, (peer, None, "x"))
                ys = [r.get("peers", {}).get(peer, {}).get("tflops") for r in sel]
                if any(y is not None for y in ys):
                    ax.plot(xs, [float("nan") if y is None else y for y in ys], marker=marker, ls="-", color=color)
            fa3 = [r.get("fa3_anchor_tflops") for r in sel]
            if any(y is not None for y in fa3):
                ax.plot(xs, [float("nan") if y is None else y for y in fa3], "^--", color="gray")
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs)
            ax.set_xticklabels([_seq_label(x) for x in xs])
            ax.minorticks_off()
            ax.set_xlabel("sequence length")
            ax.set_ylabel("TFLOPS")
            ax.set_ylim(bottom=0)
            ax.set_title(f"head dim {hdim}, {'causal' if causal else 'no mask'}")
            ax.grid(True, alpha=0.3)

    # One legend for the figure (panels stay uncovered).
    handles, labels = [], []
    if any_flash3:
        handles.append(Line2D([], [], color="tab:red", marker="o", lw=2.2))
        labels.append("flash3")
    elif skipped:
        handles.append(Line2D([], [], color="tab:red", marker="o", lw=2.2, alpha=0.3))
        labels.append(f"flash3: {mode} not supported yet (no data)")
    for peer in peers:
        label, color, marker = PEER_STYLE.get(peer, (peer, None, "x"))
        handles.append(Line2D([], [], color=color, marker=marker))
        labels.append(label)
    if any(r.get("fa3_anchor_tflops") for r in rows):
        handles.append(Line2D([], [], color="gray", marker="^", ls="--"))
        labels.append("FA3 (published anchor" + (", derived from fwd + bwd)" if mode == "fwdbwd" else ")"))
    fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 5), fontsize=9, frameon=False)

    gpu = data.get("gpu", {})
    gpu_name = gpu.get("name", "GPU") if isinstance(gpu, dict) else str(gpu)
    factor = {"fwd": "", "bwd": "; bwd FLOPs = 2.5 x fwd", "fwdbwd": "; fwd+bwd FLOPs = 3.5 x fwd"}.get(mode, "")
    fig.suptitle(f"Attention {MODE_TITLES.get(mode, mode)}, bf16, {gpu_name}\n"
                 f"batch = 16384/seqlen, heads = 2048/hdim; FLOPs 4*b*h*s^2*d (/2 causal){factor}", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--out", help="PNG path (default: the JSON path with .png)")
    a = ap.parse_args()
    with open(a.json) as f:
        data = json.load(f)
    out = a.out or os.path.splitext(a.json)[0] + ".png"
    try:
        print(plot(data, out))
    except ImportError:
        print("plot.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"plot.py: {a.json}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
