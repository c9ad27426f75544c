"""TopK SAE training step: our sparse autograd path vs plain dense PyTorch autograd, same run.

    .venv/bin/python bench/bench_topk_step.py [--d 576 --latents 4608 --k 32 --batch 4096 --steps 5]

FLOPs per step (B tokens, D d_in, F latents, K active): the encoder forward B·D·F multiply-adds is
shared by both; dense autograd adds a B·F·D decoder forward and three more B·D·F products in the
backward, the sparse path replaces those with B·K·D gathers/scatters (K/F = 0.7% of the work).
"""

import argparse
import time

import torch

from saesanity.sae import TopKSAE


def step_fn(sae, opt, x, sparse):
    def step():
        x_hat = sae(x) if sparse else sae.decode(sae.encode(x))
        loss = (x - x_hat).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def tokens_per_s(step, batch, n):
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        step()
    return n * batch / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--latents", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    x = torch.randn(a.batch, a.d)
    res = {}
    for name, sparse in (("dense autograd (reference)", False), ("sparse (ours)", True)):
        sae = TopKSAE(a.d, a.latents, a.k, seed=0)
        res[name] = tokens_per_s(step_fn(sae, torch.optim.Adam(sae.parameters()), x, sparse), a.batch, a.steps)
    ref = res["dense autograd (reference)"]
    print(f"TopK step d={a.d} F={a.latents} k={a.k} B={a.batch}, {torch.get_num_threads()} threads")
    for name, tps in res.items():
        print(f"  {name:28s} {tps:9,.0f} tok/s   ratio {tps / ref:.2f}x")


if __name__ == "__main__":
    main()
