"""Activation collection: the forward pass in bfloat16 vs float32 (reference), same run, same hookpoint.

    .venv/bin/python bench/bench_model_dtype.py [--hookpoint mlp_out.15 --batch 8 --seq 256 --reps 3]

FLOPs are identical (about 2 x 3.5M multiply-adds per token per SmolLM2 layer); bf16 halves the bytes of
weights and activations and, on CPUs with AMX / AVX512-BF16, runs the matmuls on the bf16 units.
Also prints the median relative difference of the bf16 activations from the fp32 ones. On a CPU without bf16
matrix instructions (`machine.bf16_fast`; bf16 is emulated there, ≈ 100× slower than fp32) bf16 is timed on the
first sequence only, once.
"""

import time

import torch

from common import model_args

from saesanity import machine
from saesanity.activations import run_to_hookpoints
from saesanity.models import load_model


def main():
    a = model_args(__doc__)
    res, acts = {}, {}
    fast = machine.bf16_fast()
    for dtype in ("float32", "bfloat16"):
        lm = load_model(a.model, dtype=dtype)
        ids = torch.randint(0, lm.model.config.vocab_size, (a.batch, a.seq), generator=torch.Generator().manual_seed(0))
        if dtype == "bfloat16" and not fast:
            t = time.perf_counter()
            acts[dtype] = run_to_hookpoints(lm, ids[:1], [a.hookpoint])[a.hookpoint][:, 1:].float()
            res[dtype] = a.seq / (time.perf_counter() - t)
            continue
        acts[dtype] = run_to_hookpoints(lm, ids, [a.hookpoint])[a.hookpoint][:, 1:].float()  # also the warm-up
        t = time.perf_counter()
        for _ in range(a.reps):
            run_to_hookpoints(lm, ids, [a.hookpoint])
        res[dtype] = a.reps * ids.numel() / (time.perf_counter() - t)
    n = acts["bfloat16"].shape[0]
    rel = ((acts["bfloat16"] - acts["float32"][:n]).norm(dim=-1) / acts["float32"][:n].norm(dim=-1)).median()
    print(f"{a.model} up to {a.hookpoint}, batch {a.batch}x{a.seq}, {machine.describe(machine.info())}"
          + ("" if fast else "; no bf16 instructions: bf16 timed on one sequence, once"))
    for name, tps in res.items():
        print(f"  {name + (' (reference)' if name == 'float32' else ''):22s} {tps:8,.0f} tok/s   "
              f"ratio {tps / res['float32']:.2f}x")
    print(f"  median relative difference of bf16 activations from fp32: {rel:.4f}")


if __name__ == "__main__":
    main()
