"""Activation collection: forward stopped after the hooked layer vs the full model, same run.

    .venv/bin/python bench/bench_early_stop.py [--hookpoint mlp_out.15 --batch 8 --seq 256 --reps 3]
"""

import time

import torch

from common import model_args

from saesanity.activations import run_to_hookpoints
from saesanity.models import load_model


def main():
    a = model_args(__doc__)
    lm = load_model(a.model)
    ids = torch.randint(0, lm.model.config.vocab_size, (a.batch, a.seq))

    def full():
        with torch.no_grad():
            lm.model(ids, use_cache=False)

    def early():
        run_to_hookpoints(lm, ids, [a.hookpoint])

    res = {}
    for name, fn in (("full forward + LM head (reference)", full), (f"stop after {a.hookpoint}", early)):
        fn()
        t = time.perf_counter()
        for _ in range(a.reps):
            fn()
        res[name] = a.reps * ids.numel() / (time.perf_counter() - t)
    ref = next(iter(res.values()))
    print(f"{a.model}, batch {a.batch}x{a.seq}, {torch.get_num_threads()} threads")
    for name, tps in res.items():
        print(f"  {name:36s} {tps:8,.0f} tok/s   ratio {tps / ref:.2f}x")


if __name__ == "__main__":
    main()
