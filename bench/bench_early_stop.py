"""Activation collection: forward stopped after the hooked layer vs the full model, same run.

    .venv/bin/python bench/bench_early_stop.py [--hookpoint mlp_out.15 --batch 8 --seq 256 --reps 3]
"""

import torch

from common import early_stop_rates, model_args


def main():
    a = model_args(__doc__)
    res = early_stop_rates(a.model, a.hookpoint, a.batch, a.seq, a.reps)
    ref = next(iter(res.values()))
    print(f"{a.model}, batch {a.batch}x{a.seq}, {torch.get_num_threads()} threads")
    for name, tps in res.items():
        print(f"  {name:36s} {tps:8,.0f} tok/s   ratio {tps / ref:.2f}x")


if __name__ == "__main__":
    main()
