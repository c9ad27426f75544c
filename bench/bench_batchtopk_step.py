"""BatchTopK / Matryoshka training step: the sparse step (`sae.arch.BatchTopKSAE.training_step`) against the dense
step it replaced (`torch.topk` over the flattened batch, dense codes, `reconstruction_loss` by autograd), beside TopK's
sparse step, same shapes, same run.

    .venv/bin/python bench/bench_batchtopk_step.py [--d 576 --latents 2304 4608 --k 32 --batch 4096 --steps 8]

Each step is timed with its Adam update under bf16 autocast (the figures' setting; `--fp32` for none), as the median
of `--steps` steps after two warm-up ones. Work per step (B tokens, D = d_in, F latents, k): every path computes the
dense encoder product (B·D·F multiply-adds); the dense step adds a B·F·D decoder product and two more B·D·F products in
the backward and a top-(B·k) over B·F values; the sparse one replaces those with B·k·D gathers and scatters per level.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from saesanity.sae import TrainConfig
from saesanity.sae.base import StepOut
from saesanity.sae.train import make_sae


def dense_step(sae, x, dead, cfg) -> StepOut:
    """The dense BatchTopK step of before 2026-12-05 (what the committed figures up to then were trained with)."""
    pre = sae.pre_acts(x)
    flat = F.relu(pre).flatten()
    top = flat.topk(sae.k * x.shape[0], sorted=False)
    z = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
    sae._track_threshold(top.values)
    loss, rec, _ = sae.reconstruction_loss(x, z)
    return StepOut(loss, rec, 0.0, (z != 0).any(0), 0.0)


def timed(sae, x, cfg, step, n: int, bf16: bool) -> float:
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(sae.d_sae, dtype=torch.bool)
    times = []
    for i in range(n + 2):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = step(sae, x, dead, cfg)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--latents", type=int, nargs="+", default=[2304, 4608])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--fp32", action="store_true")
    a = ap.parse_args()
    from saesanity import machine

    bf16 = not a.fp32
    x = torch.randn(a.batch, a.d, generator=torch.Generator().manual_seed(0))
    print(f"{machine.describe(machine.info())}; d={a.d} k={a.k} B={a.batch}, {'bf16 autocast' if bf16 else 'fp32'}, "
          f"median of {a.steps} steps")
    for F_ in a.latents:
        widths = (F_ // 8, F_ // 4, F_ // 2)
        ms = {}
        for name, arch, step in (("TopK, sparse", "topk", None), ("BatchTopK, dense (reference)", "batchtopk", dense_step),
                                 ("BatchTopK, sparse", "batchtopk", None), ("Matryoshka, sparse", "matryoshka", None)):
            cfg = TrainConfig(d_sae=F_, k=a.k, auxk_alpha=0.0, architecture=arch,
                              matryoshka_widths=widths if arch == "matryoshka" else ())
            sae = make_sae(cfg, a.d)
            ms[name] = 1e3 * timed(sae, x, cfg, step or (lambda s, x_, d, c: s.training_step(x_, d, c)), a.steps, bf16)
        ref = ms["BatchTopK, dense (reference)"]
        print(f"F = {F_:,}")
        for name, v in ms.items():
            print(f"  {name:30s} {v:8.1f} ms   dense BatchTopK / this: {ref / v:5.2f}x")


if __name__ == "__main__":
    main()
