#!/usr/bin/env python3
"""A small causal transformer block trained for a few steps with flash3's attention, and again, from the same
initial weights and data, with PyTorch SDPA; the two loss curves must match.

  python3 examples/train_causal_block.py [--steps 20] [--compile] [--dtype bfloat16]

The model: token embedding -> pre-norm block (GQA attention with 8 query and 2 KV heads, head dim 64, and an MLP)
-> LM head, trained on next-token prediction over a random sequence with a repeating pattern (so the loss falls).
Attention is the only difference between the two runs: `flash3.flash_attn_func(q, k, v, causal=True)` on
(batch, seq, heads, dim) tensors, against `F.scaled_dot_product_attention(..., is_causal=True, enable_gqa=True)` on
(batch, heads, seq, dim). In bf16 the two differ by rounding only, so the losses agree to a few 1e-3 and the final
loss is far below the first.

Exit status: 0 the losses match; 1 they do not; 2 no GPU / PyTorch / libflash3 (or the backward kernel is not built).
"""
import argparse
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))


def build(torch, use_flash3, vocab, dim, heads, kv_heads, dtype):
    import torch.nn as nn
    import torch.nn.functional as F

    import flash3

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.h, self.hk, self.d = heads, kv_heads, dim // heads
            self.wqkv = nn.Linear(dim, (heads + 2 * kv_heads) * self.d, bias=False)
            self.wo = nn.Linear(dim, dim, bias=False)

        def forward(self, x):
            b, s, _ = x.shape
            qkv = self.wqkv(x).view(b, s, self.h + 2 * self.hk, self.d)
            q, k, v = qkv.split([self.h, self.hk, self.hk], dim=2)
            if use_flash3:
                o = flash3.flash_attn_func(q, k, v, causal=True)  # (b, s, h, d) in and out
            else:
                o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                   is_causal=True, enable_gqa=True).transpose(1, 2)
            return self.wo(o.reshape(b, s, dim))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, dim)
            self.n1 = nn.LayerNorm(dim)
            self.attn = Attention()
            self.n2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            self.nf = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, vocab, bias=False)

        def forward(self, tokens):
            x = self.emb(tokens)
            x = x + self.attn(self.n1(x))
            x = x + self.mlp(self.n2(x))
            return self.head(self.nf(x))

    torch.manual_seed(1234)  # the same initial weights for both runs
    return Block().to("cuda", dtype)


def train(torch, name, model, data, steps, lr, compile_model):
    import torch.nn.functional as F

    step_fn = torch.compile(model, fullgraph=True) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=lr, eps=1e-6)
    losses = []
    for i in range(steps):
        tokens = data[i % len(data)]
        logits = step_fn(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        print(f"  {name} step {i}: loss {losses[-1]:.4f}", flush=True)
    return losses


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) both models")
    ap.add_argument("--tol", type=float, default=0.05, help="max |loss_flash3 - loss_sdpa| per step")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("train_causal_block: PyTorch is not installed")
        return 2
    if not torch.cuda.is_available():
        print("train_causal_block: no CUDA device")
        return 2
    import flash3

    dtype = getattr(torch, args.dtype)
    vocab, heads, kv_heads = 256, args.dim // 64, 2
    # Data: random sequences whose second half repeats the first (the model can learn to copy, so loss falls).
    g = torch.Generator(device="cuda").manual_seed(7)
    half = (args.seq + 1 + 1) // 2
    data = []
    for _ in range(4):
        first = torch.randint(0, vocab, (args.batch, half), device="cuda", generator=g)
        data.append(torch.cat([first, first], dim=1)[:, :args.seq + 1])

    results = {}
    for name, use_flash3 in (("sdpa", False), ("flash3", True)):
        model = build(torch, use_flash3, vocab, args.dim, heads, kv_heads, dtype)
        try:
            results[name] = train(torch, name, model, data, args.steps, args.lr, args.compile)
        except NotImplementedError as e:
            print(f"train_causal_block: flash3 cannot train here: {e}")
            return 2
        except OSError as e:
            print(f"train_causal_block: {e}")
            return 2

    a, b = results["flash3"], results["sdpa"]
    print(f"causal block: dim {args.dim}, {heads} heads / {kv_heads} KV heads, seq {args.seq}, batch {args.batch}, "
          f"{args.dtype}{', compiled' if args.compile else ''}; flash3 library {flash3.library_path()}")
    print("| step | loss flash3 | loss SDPA | diff |")
    print("|---|---|---|---|")
    worst = 0.0
    for i, (x, y) in enumerate(zip(a, b)):
        worst = max(worst, abs(x - y))
        if i < 3 or i == len(a) - 1 or i % 5 == 0:
            print(f"| {i} | {x:.4f} | {y:.4f} | {abs(x - y):.1e} |")
    ok = worst <= args.tol and all(math.isfinite(x) for x in a) and a[-1] < a[0]
    print(f"losses {'match' if ok else 'DO NOT match'}: max |diff| {worst:.2e} (tolerance {args.tol}); loss "
          f"{a[0]:.3f} -> {a[-1]:.3f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
