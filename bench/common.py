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
