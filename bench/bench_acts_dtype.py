"""What storing cached activations in float16 (`acts_dtype: float16`) costs in precision, against float32 in the
same run: the stored values, and the SAEs trained on them.

    .venv/bin/python bench/bench_acts_dtype.py [--tokens 262144 --eval-tokens 65536 --hookpoint mlp_out.15
                                                --d-sae 4608 --k 32 --batch 1024 --lr 1e-3 --autocast bf16]

SmolLM2-135M (the embedded default, bf16 forward as the figures run it) over the Debian text. The float16 array is
the float32 one rounded to nearest (`collect` with store_dtype float16 writes exactly that:
tests/test_activations.py), so this casts instead of collecting twice. Printed:

- the arrays: bytes, relative error ‖x16 − x32‖ / ‖x32‖, largest |x| against float16's 65,504, the share of values
  that are float16 subnormals (|x| < 6.1e-5, fewer than 11 significant bits);
- SAEs of seeds 0 and 1 trained on each (same config, same batch order): held-out FVU on the float32 held-out
  activations, the shared fraction of the seed pair (the paper's rule), and how far the float16-trained SAE of a seed
  is from the float32-trained one of the same seed (its shared fraction with it) — beside the seed-to-seed
  difference, the scale it must stay under to be called noise.
"""

import argparse
import time

import numpy as np
import torch

from saesanity import machine
from saesanity.activations import ActivationSpec, collect
from saesanity.matching import PAPER_RULE, match, shared
from saesanity.metrics import fvu
from saesanity.sae import TrainConfig, train_sae


def heldout_fvu(sae, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(fvu(x, sae(x)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=262144)
    ap.add_argument("--eval-tokens", type=int, default=65536)
    ap.add_argument("--hookpoint", default="mlp_out.15")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--autocast", default="bf16", choices=["none", "bf16"])
    a = ap.parse_args()
    print(f"float16 vs float32 activation storage on {machine.describe(machine.info())}; smollm2-135m "
          f"{a.hookpoint}, {a.tokens:,} training / {a.eval_tokens:,} held-out tokens")
    spec = ActivationSpec(model="smollm2-135m", variant="trained", corpus="debian", n_tokens=a.tokens, seq_len=256,
                          seed=0, model_dtype="bfloat16")
    x32 = np.asarray(collect(spec, [a.hookpoint])[a.hookpoint])
    held = ActivationSpec(**{**spec.__dict__, "n_tokens": a.eval_tokens, "split": "heldout"})
    xh = torch.from_numpy(np.array(collect(held, [a.hookpoint])[a.hookpoint], dtype=np.float32))
    x16 = x32.astype(np.float16)
    back = x16.astype(np.float32)
    rel = np.linalg.norm(back - x32) / np.linalg.norm(x32)
    tiny = float((np.abs(x32) < np.finfo(np.float16).tiny).mean())
    print(f"  arrays: float32 {x32.nbytes / 1e6:,.0f} MB, float16 {x16.nbytes / 1e6:,.0f} MB; relative error "
          f"{rel:.2e} (2^-12 = {2.0 ** -12:.2e}); max |x| {np.abs(x32).max():.4g} (float16 max 65,504); "
          f"{100 * tiny:.3f}% of values below float16's normal range")
    cfg = TrainConfig(d_sae=a.d_sae, k=a.k, batch_size=a.batch, n_tokens=a.tokens, lr=a.lr, autocast=a.autocast)
    saes = {}
    for name, arr in (("float32", x32), ("float16", x16)):
        for seed in (0, 1):
            t = time.perf_counter()
            saes[name, seed], _ = train_sae(arr, TrainConfig(**{**cfg.__dict__, "seed": seed}), progress=False)
            print(f"  trained {name} seed {seed} in {time.perf_counter() - t:.0f} s: held-out FVU "
                  f"{heldout_fvu(saes[name, seed], xh):.4f}")

    def frac(p, q):
        return float(shared(match(saes[p], saes[q]), PAPER_RULE).mean())

    for name in ("float32", "float16"):
        print(f"  {name}: seed 0 vs seed 1 shared {100 * frac((name, 0), (name, 1)):.1f}%")
    for seed in (0, 1):
        print(f"  seed {seed}: float16-trained vs float32-trained shared {100 * frac(('float32', seed), ('float16', seed)):.1f}%")


if __name__ == "__main__":
    main()
