"""Train a notebook's SAEs ahead of it — data parallel under torchrun — so the notebook finds them cached.

    torchrun --standalone --nproc_per_node 8 -m saesanity.pretrain <stem> <profile> [--set key=value ...]
    python -m saesanity.pretrain <stem> <profile>          # one process works too

Every rank trains (each on its slice of every batch, `sae.train.train_family`); rank 0 publishes the
SAEs to the cache (`$SAESANITY_CACHE`), keyed exactly as the notebook keys them, and the held-out
activations the notebook evaluates on. `make figure STEM=<stem> PROFILE=paper NPROC=8` runs this, then
the notebook. What each notebook trains is listed in `TRAINS`; notebooks that train nothing at scale
(auto-interp on other notebooks' SAEs, toy models, a SAELens release) have no entry and are skipped
with a message. Paulo & Belrose Fig. 4 pre-trains its layer × size and hookpoint-kind seed pairs
(`runs.train_hookpoints`: with sparsify, one run per size over every hookpoint; with ours streamed, every
hookpoint's SAEs in one pass); its architecture panel stays in the notebook, one process: each
calibration run's coefficient comes from the previous run's held-out L0 (`runs.calibrate_sparsity`), so
those SAEs cannot be listed ahead.
"""

from __future__ import annotations

import argparse
import sys
import time

import yaml

from . import distributed, params, runs


def _seed_family(P) -> str:
    saes, _ = runs.seed_saes(P)
    runs.heldout_acts(P)
    kinds = getattr(P, "data_nulls", [])  # consistency_seeds: its seed pair on the real data and each data null
    for data, data_dir in runs.data_nulls(P, kinds).values() if kinds else ():
        runs.train_many(P, data, data_dir, runs.pair_cfgs(P, P.null_tokens), True)
    return f"{len(saes)} seed SAEs at {P.hookpoint}" + (f", seed pairs on the data nulls {kinds}" if kinds else "")


def _sweep(P) -> str:
    axes = {"d_sae": P.sizes, "k": P.ks, "n_tokens": P.train_tokens}
    for axis, values in axes.items():
        runs.sweep_train(P, axis, values)
    runs.heldout_acts(P)
    return f"seed pairs along {', '.join(f'{a} {v}' for a, v in axes.items())}"


def _variants(P) -> str:
    from . import baselines

    for v in P.variants:
        baselines.variant_saes(P, v)
        baselines.heldout(P, v)
    return f"{len(P.variants)} variants x {len(P.layers)} layers"


def fig4_points(P) -> list[tuple[str, int]]:
    """Paulo & Belrose Fig. 4's (hookpoint, d_sae) points, as its notebook lists them: panel (a) the first kind
    at every layer × `layer_sizes`, panel (b) every kind at every layer at `d_sae` (tests/test_pretrain.py
    checks this is the notebook's list)."""
    first = P.kinds[0]
    points = [(f"{first}.{L}", s) for L in P.layers for s in P.layer_sizes]
    points += [(f"{kind}.{L}", P.d_sae) for kind in P.kinds for L in P.layers]
    return list(dict.fromkeys(points))


def _layer_pairs(P) -> str:
    points = fig4_points(P)
    hps = list(dict.fromkeys(h for h, _ in points))
    cfgs = {h: [c for p, size in points if p == h for c in runs.point_cfgs(P, size)] for h in hps}
    trained = runs.train_hookpoints(P, cfgs)
    runs.data_for(P, "heldout", True, hps)
    return (f"{sum(map(len, trained.values()))} seed SAEs at {len(hps)} hookpoints (layer x size, kinds); "
            "the architecture panel trains in the notebook")


def _sizes(P) -> str:
    from . import stitching

    fam = stitching.size_family(P)
    return f"{len(fam)} sizes" + (f" (release {P.release}: nothing trained)" if P.release else "")


TRAINS = {
    **{stem: _seed_family for stem in params.SEED_FAMILY},
    "paulo_fig3_interp_vs_sharing": _seed_family,
    "paulo_table1_unpaired_explanations": _seed_family,
    "paulo_fig4_overlap_vs_layer_position_arch": _layer_pairs,  # not its architecture panel (module docstring)
    "paulo_fig5_overlap_vs_size_k_tokens": _sweep,
    "paulo_figA4_mean_cosines_vs_size_k_tokens": _sweep,
    "heap_metrics_vs_layer": _variants,
    "heap_token_entropy": _variants,
    "heap_figB_autointerp_roc": _variants,
    "leask_novel_fraction": _sizes,
    "leask_stitching": _sizes,
    "leask_meta_sae": _sizes,
}


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key:
            raise params.ParamsError(f"--set {p!r}: expected key=value")
        out[key] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saesanity.pretrain", description=__doc__.split("\n\n")[0])
    ap.add_argument("stem")
    ap.add_argument("profile")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one parameter")
    args = ap.parse_args(argv)
    try:
        P = params.load(args.stem, args.profile, **_overrides(args.set))
    except params.ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rank, world, _ = distributed.init(getattr(P, "device", "cpu"))
    if args.stem not in TRAINS:
        if rank == 0:
            print(f"{args.stem}: nothing to pretrain (the notebook trains nothing at scale, or only in one process)")
        distributed.close()
        return 0
    t0 = time.perf_counter()
    what = TRAINS[args.stem](P)
    if rank == 0:
        print(f"{args.stem} [{args.profile}] on {world} rank(s): {what}, {time.perf_counter() - t0:.0f} s")
    distributed.close()
    return 0


if __name__ == "__main__":
    distributed.exit(main())
