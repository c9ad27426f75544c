"""One SAE training step of our trainer, fp32 (the reference) vs bf16 autocast (`TrainConfig.autocast`), same run.

    .venv/bin/python bench/bench_autocast_step.py [--arch topk --d 576 --latents 4608 --k 32 --batch 4096
                                                   --steps 5 --reps 3 --device cpu --threads 0]

The step is `sae.train._local_step` — forward (`training_step`, under autocast for bf16), backward, decoder
gradient projection, Adam, decoder renormalisation — on N(0, 1) activations, no dead latents (no AuxK).
Tokens/s is the median over `reps` timings of `steps` steps each, after one warm-up step; fp32 and bf16
alternate within each repetition so both see the same machine load. On a CPU shared with another busy
process, `--threads 1` gives steadier ratios than threads competing for a busy core.
"""

import argparse
import dataclasses
import statistics
import time

import torch

from saesanity import machine
from saesanity.sae.train import TrainConfig, _local_step, make_sae


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="topk")
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--latents", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    x = torch.randn(a.batch, a.d, generator=torch.Generator().manual_seed(0)).to(a.device)
    base = TrainConfig(d_sae=a.latents, k=a.k, batch_size=a.batch, architecture=a.arch)
    runs = {}
    for name, cfg in (("fp32 (reference)", base), ("bf16 autocast", dataclasses.replace(base, autocast="bf16"))):
        sae = make_sae(cfg, a.d).to(a.device)
        opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
        dead = torch.zeros(a.latents, dtype=torch.bool, device=a.device)
        runs[name] = (sae, opt, dead, cfg)
        _local_step(sae, opt, x, dead, cfg, 0)  # warm-up
    times = {name: [] for name in runs}
    for _ in range(a.reps):
        for name, (sae, opt, dead, cfg) in runs.items():
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            for step in range(a.steps):
                _local_step(sae, opt, x, dead, cfg, step + 1)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    print(f"{a.arch} step d={a.d} F={a.latents} k={a.k} B={a.batch} on {machine.describe(machine.info())}; "
          f"median of {a.reps} x {a.steps} steps")
    ref = None
    for name, ts in times.items():
        tps = a.steps * a.batch / statistics.median(ts)
        ref = ref or tps
        print(f"  {name:18s} {tps:9,.0f} tok/s   ratio {tps / ref:.2f}x")


if __name__ == "__main__":
    main()
