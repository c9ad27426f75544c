"""How far the embedded default is from convergence, and what gets it there: the seed pair of Paulo & Belrose's
Fig. 1 (held-out FVU and shared fraction) against training tokens, for a constant learning rate (ours) and the
linear decay to zero of the papers' engine (sparsify's `get_linear_schedule_with_warmup`).

    .venv/bin/python bench/convergence_scale.py [--tokens 8000000 --rows 4000000 --hookpoint mlp_out.15
                                                 --d-sae 4608 --k 32 --batch 4096 --lr 4e-3 --schedules constant,linear]

SmolLM2-135M (bf16 forward) over the Debian text: `--rows` training activations collected once (float16), each SAE
passing over them `tokens / rows` times (epochs: each pass its own permutation), evaluated on 100K held-out tokens.
Every SAE of a schedule trains in one pass (`train_family`): with the constant rate, the shorter runs are snapshots
of the longest (a shorter run is a prefix); with the decay, each length is its own run (its rate reaches zero at
its own end), all stepping on the same batches. Printed per schedule and length: held-out FVU of both seeds, the
shared fraction (the paper's rule: Hungarian on encoder and decoder, both cosines ≥ 0.7), and
`saesanity.convergence.check` over the last three lengths.
"""

import argparse
import dataclasses
import time

import numpy as np
import torch

from saesanity import convergence, machine
from saesanity.activations import ActivationSpec, collect
from saesanity.matching import PAPER_RULE, match, shared
from saesanity.metrics import fvu
from saesanity.sae import TrainConfig
from saesanity.sae.train import MemmapSource, batch_order, train_family


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=8_000_000, help="the longest run's training tokens")
    ap.add_argument("--rows", type=int, default=4_000_000, help="training activations collected")
    ap.add_argument("--lengths", type=int, default=4, help="lengths: tokens, tokens/2, … (this many)")
    ap.add_argument("--hookpoint", default="mlp_out.15")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--schedules", default="constant,linear")
    ap.add_argument("--autocast", default="bf16", choices=["none", "bf16"])
    a = ap.parse_args()
    print(f"convergence of the Fig. 1 seed pair on {machine.describe(machine.info())}: smollm2-135m {a.hookpoint}, "
          f"{a.d_sae} latents, k {a.k}, batch {a.batch}, lr {a.lr}, {a.rows:,} rows collected, SAE {a.autocast}")
    spec = ActivationSpec(model="smollm2-135m", variant="trained", corpus="debian", n_tokens=a.rows, seq_len=256,
                          seed=0, model_dtype="bfloat16", store_dtype="float16")
    acts = collect(spec, [a.hookpoint])[a.hookpoint]
    held = dataclasses.replace(spec, n_tokens=100_000, split="heldout")
    xh = torch.from_numpy(np.array(collect(held, [a.hookpoint])[a.hookpoint], dtype=np.float32))
    lengths = sorted(a.tokens >> i for i in range(a.lengths))
    for schedule in a.schedules.split(","):
        base = TrainConfig(d_sae=a.d_sae, k=a.k, batch_size=a.batch, n_tokens=a.tokens, lr=a.lr,
                           warmup_steps=a.warmup, autocast=a.autocast, lr_schedule=schedule)
        source = MemmapSource(acts, batch_order(acts.shape[0], base))
        found: dict[tuple[int, int], object] = {}
        if schedule == "constant":
            cfgs = [dataclasses.replace(base, seed=s) for s in (0, 1)]
            snaps = [{n: (lambda sae, log, n=n, s=s: found.__setitem__((n, s), _copy(sae))) for n in lengths[:-1]}
                     for s in (0, 1)]
        else:
            cfgs = [dataclasses.replace(base, seed=s, n_tokens=n) for n in lengths for s in (0, 1)]
            snaps = [{} for _ in cfgs]
        t = time.perf_counter()
        out = train_family(source, cfgs, snapshots=snaps, desc=f"{schedule} lr")
        seconds = time.perf_counter() - t
        for c, (sae, _) in zip(cfgs, out):
            found[c.n_tokens, c.seed] = sae
        rows = []
        print(f"  {schedule} learning rate ({seconds:.0f} s for {sum(c.n_tokens for c in cfgs):,} SAE-tokens "
              f"over {a.tokens:,} batch tokens)")
        for n in lengths:
            with torch.no_grad():
                f = [float(fvu(xh, found[n, s](xh))) for s in (0, 1)]
            frac = float(shared(match(found[n, 0], found[n, 1]), PAPER_RULE).mean())
            rows.append({"n_tokens": n, "fvu": float(np.mean(f)), "shared": frac})
            print(f"    {n:>11,} tokens ({n / acts.shape[0]:.2f} epochs): held-out FVU {f[0]:.4f} / {f[1]:.4f}, "
                  f"shared {100 * frac:5.1f}%")
        print(f"    {convergence.describe(convergence.check(rows[-3:]))}")


def _copy(sae):
    import copy

    return copy.deepcopy(sae).cpu()


if __name__ == "__main__":
    main()
