"""The H100 reference numbers flash3 is measured against, as data.

Transcribed from /work/shared/reference/h100-anchors.md (measured 2026-11-21 on an NVIDIA H100 80GB HBM3 SXM, 132 SMs,
700 W, 1980 MHz max SM clock; PyTorch 2.11 + cuDNN 9.19, CUDA 13.0; FA3 = public FlashAttention-3 hopper/ built for
sm_90a). Convention: bf16, batch = 16384 / seqlen, heads = 2048 / hdim, layout (b, s, h, d), FLOPs 4*b*h*s^2*d
(/2 causal), backward 2.5x forward; triton do_bench median, both in one process. Run-to-run noise about 3%.

`python3 benchmarks/compare.py --selftest` re-reads the markdown (when it is there) and checks this table against it.
"""

ANCHOR_SOURCE = "/work/shared/reference/h100-anchors.md"
NOISE = 0.03  # run-to-run noise of the anchors (relative)

# Ceilings on the same GPU.
CEILINGS = {"bf16_gemm_tflops": 790.0, "fp8_gemm_tflops": 1378.0, "copy_tbps": 3.02}

# (hdim, mask, seqlen, FA3 fwd, cuDNN fwd, FA3/cuDNN fwd, FA3 bwd, cuDNN bwd, FA3/cuDNN bwd), TFLOPS.
_ROWS = [
    (64, "full", 512, 325, 380, 0.86, 298, 247, 1.20),
    (64, "full", 1024, 372, 422, 0.88, 388, 340, 1.14),
    (64, "full", 2048, 463, 439, 1.06, 446, 388, 1.15),
    (64, "full", 4096, 479, 459, 1.04, 484, 456, 1.06),
    (64, "full", 8192, 515, 441, 1.17, 503, 446, 1.13),
    (64, "full", 16384, 531, 460, 1.15, 527, 462, 1.14),
    (64, "causal", 512, 181, 255, 0.71, 113, 151, 0.75),
    (64, "causal", 1024, 284, 328, 0.87, 261, 231, 1.13),
    (64, "causal", 2048, 401, 388, 1.03, 370, 310, 1.19),
    (64, "causal", 4096, 440, 422, 1.04, 443, 347, 1.27),
    (64, "causal", 8192, 485, 428, 1.13, 496, 407, 1.22),
    (64, "causal", 16384, 500, 432, 1.16, 523, 437, 1.20),
    (128, "full", 512, 495, 503, 0.98, 213, 299, 0.71),
    (128, "full", 1024, 594, 556, 1.07, 437, 399, 1.09),
    (128, "full", 2048, 627, 579, 1.08, 504, 471, 1.07),
    (128, "full", 4096, 703, 598, 1.18, 539, 506, 1.07),
    (128, "full", 8192, 668, 600, 1.11, 586, 513, 1.14),
    (128, "full", 16384, 691, 606, 1.14, 612, 510, 1.20),
    (128, "causal", 512, 199, 316, 0.63, 142, 172, 0.83),
    (128, "causal", 1024, 440, 431, 1.02, 223, 286, 0.78),
    (128, "causal", 2048, 549, 492, 1.12, 415, 357, 1.16),
    (128, "causal", 4096, 614, 528, 1.16, 497, 436, 1.14),
    (128, "causal", 8192, 641, 592, 1.08, 548, 476, 1.15),
    (128, "causal", 16384, 679, 625, 1.09, 597, 490, 1.22),
    (256, "full", 512, 489, 493, 0.99, 266, 216, 1.23),
    (256, "full", 1024, 625, 585, 1.07, 350, 289, 1.21),
    (256, "full", 2048, 672, 635, 1.06, 395, 328, 1.20),
    (256, "full", 4096, 711, 659, 1.08, 421, 339, 1.24),
    (256, "full", 8192, 730, 656, 1.11, 454, 342, 1.33),
    (256, "full", 16384, 746, 647, 1.15, 458, 362, 1.27),
    (256, "causal", 512, 281, 308, 0.91, 164, 157, 1.05),
    (256, "causal", 1024, 457, 440, 1.04, 258, 237, 1.09),
    (256, "causal", 2048, 564, 521, 1.08, 341, 291, 1.17),
    (256, "causal", 4096, 642, 555, 1.16, 398, 346, 1.15),
    (256, "causal", 8192, 673, 577, 1.17, 419, 359, 1.16),
    (256, "causal", 16384, 795, 583, 1.36, 434, 370, 1.17),
]

# FA3 FP8 (e4m3) forward TFLOPS, output bf16, no descale: (hdim, mask) -> {seqlen: TFLOPS}.
FP8_FWD = {
    (64, "full"): {1024: 449, 4096: 621, 8192: 656, 16384: 684},
    (64, "causal"): {1024: 308, 4096: 523, 8192: 605, 16384: 579},
    (128, "full"): {1024: 750, 4096: 844, 8192: 895, 16384: 882},
    (128, "causal"): {1024: 484, 4096: 764, 8192: 819, 16384: 854},
    (256, "full"): {1024: 919, 4096: 1109, 8192: 1118, 16384: 1110},
    (256, "causal"): {1024: 645, 4096: 1005, 8192: 1037, 16384: 1050},
}

# Decode, bf16, hdim 128, 32 query heads / 8 KV heads, one query token: GB/s of K+V read (the anchors' decode table):
# (batch, seqlen_k) -> {"fa3", "fa3_paged", "cudnn", "fa2"}. flash3-bench --mode decode's defaults are these shapes.
DECODE = {
    (1, 8192): dict(fa3=398, fa3_paged=447, cudnn=1245, fa2=971),
    (1, 131072): dict(fa3=2600, fa3_paged=2605, cudnn=2784, fa2=2653),
    (8, 8192): dict(fa3=2370, fa3_paged=2417, cudnn=2495, fa2=2416),
    (8, 32768): dict(fa3=2857, fa3_paged=2868, cudnn=2920, fa2=2945),
    (32, 8192): dict(fa3=2865, fa3_paged=2883, cudnn=2961, fa2=2658),
    (32, 32768): dict(fa3=3033, fa3_paged=3028, cudnn=3077, fa2=2476),
    (64, 4096): dict(fa3=2839, fa3_paged=2875, cudnn=2947, fa2=2501),
    (64, 16384): dict(fa3=3014, fa3_paged=3053, cudnn=3071, fa2=2507),
    (128, 8192): dict(fa3=2966, fa3_paged=3062, cudnn=3064, fa2=2573),
}

FIELDS = ("fa3", "cudnn", "ratio")


def _table(direction):
    off = {"fwd": 3, "bwd": 6}[direction]
    return {(r[0], r[1], r[2]): dict(zip(FIELDS, r[off:off + 3])) for r in _ROWS}


# (hdim, "full" | "causal", seqlen) -> {"fa3": TFLOPS, "cudnn": TFLOPS, "ratio": FA3/cuDNN as printed}
FWD = _table("fwd")
BWD = _table("bwd")


def anchor(direction, hdim, causal, seqlen):
    """The anchor row for one config, or None when the table has no such row.

    direction "fwdbwd" has no measured anchor: it is derived from the forward and backward rows as the time of one
    forward plus one backward, 3.5 F / (F / fwd + 2.5 F / bwd) TFLOPS (FA3's FLOP convention), for FA3 and cuDNN
    alike, with the ratio recomputed from the two (so it is not rounded like the printed ones)."""
    key = (int(hdim), "causal" if causal else "full", int(seqlen))
    if direction == "fwdbwd":
        f, b = FWD.get(key), BWD.get(key)
        if f is None or b is None:
            return None
        out = {name: 3.5 / (1.0 / f[name] + 2.5 / b[name]) for name in ("fa3", "cudnn")}
        out["ratio"] = out["fa3"] / out["cudnn"]
        return out
    table = {"fwd": FWD, "bwd": BWD}[direction]
    return table.get(key)


def parse_decode_markdown(path=ANCHOR_SOURCE):
    """Re-reads the decode table of the anchors markdown: {(batch, seqlen_k): (fa3, fa3_paged, cudnn, fa2)}."""
    out = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 6 and all(c.isdigit() for c in cells):
                out[(int(cells[0]), int(cells[1]))] = tuple(float(c) for c in cells[2:])
    return out


def parse_markdown(path=ANCHOR_SOURCE):
    """Re-reads the bf16 table of the anchors markdown: {(hdim, mask, seqlen): (9 numbers as in _ROWS)}."""
    out = {}
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 9 and cells[0].isdigit():
                key = (int(cells[0]), cells[1], int(cells[2]))
                out[key] = (key[0], key[1], key[2]) + tuple(float(c) for c in cells[3:])
    return out
