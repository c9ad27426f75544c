"""Pieces the activation benchmarks share: their command line."""

import argparse


def model_args(description: str) -> argparse.Namespace:
    """--model, --hookpoint, --batch, --seq, --reps with the defaults every activation benchmark uses."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hookpoint", default="mlp_out.15")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    return ap.parse_args()


def early_stop_rates(model: str, hookpoint: str, batch: int, seq: int, reps: int) -> dict[str, float]:
    """Tokens/s of the whole model with its LM head (the reference, first) and of `run_to_hookpoints`
    stopped after `hookpoint`, on random token ids; each timed over `reps` calls after one warm-up."""
    import time

    import torch

    from saesanity.activations import run_to_hookpoints
    from saesanity.models import load_model

    lm = load_model(model)
    ids = torch.randint(0, lm.model.config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(0))

    def full():
        with torch.no_grad():
            lm.model(ids, use_cache=False)

    def early():
        run_to_hookpoints(lm, ids, [hookpoint])

    res = {}
    for name, fn in (("full forward + LM head (reference)", full), (f"stop after {hookpoint}", early)):
        fn()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        res[name] = reps * ids.numel() / (time.perf_counter() - t)
    return res
