"""saesanity.pretrain: a notebook's SAEs trained ahead of it under torchrun (2 gloo ranks), found cached by
the notebook's own pipeline call, and equal to one process's (to float reassociation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saesanity import params, pretrain, runs

OVERRIDES = ["activations=streamed", "stream_buffer_tokens=4096", "n_tokens=8192", "d_sae=128"]


def _run(args, cache, nproc=None):
    env = dict(os.environ, SAESANITY_CACHE=str(cache), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "lib"), env.get("PYTHONPATH", "")])
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "saesanity.pretrain"] if nproc else [sys.executable, "-m", "saesanity.pretrain"])
    return subprocess.run(launch + args, env=env, capture_output=True, text=True, timeout=600)


def test_pretrain_under_torchrun_fills_the_notebooks_cache(iso_cache, monkeypatch):
    stem = "paulo_fig1_matched_cosines"
    args = [stem, "smoke"] + [a for o in OVERRIDES for a in ("--set", o)]
    r = _run(args, iso_cache, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 rank(s): 3 seed SAEs at mlp_out.2" in r.stdout  # Fig. 1's smoke seeds: the pair + the floor's third
    P = params.load(stem, "smoke", **pretrain._overrides(OVERRIDES))
    monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("the notebook retrained a pretrained SAE"))
    ranks2, _ = runs.seed_saes(P, progress=False)
    runs.heldout_acts(P, progress=False)  # collected by rank 0 for the notebook
    monkeypatch.undo()
    # one process, another cache: the same SAEs up to float reassociation
    other = iso_cache.parent / "cache1"
    other.mkdir()
    for shared in ("debian", "model", "tokens"):
        (other / shared).symlink_to(iso_cache / shared)
    r = _run(args, other)
    assert r.returncode == 0 and "on 1 rank(s)" in r.stdout, r.stderr[-3000:]
    monkeypatch.setenv("SAESANITY_CACHE", str(other))
    one, _ = runs.seed_saes(P, progress=False)
    assert [t.path.name for t in one] == [t.path.name for t in ranks2]  # one key, whatever the launch
    for a, b in zip(one, ranks2):
        torch.testing.assert_close(a.sae.W_dec, b.sae.W_dec, rtol=1e-4, atol=1e-5)


def test_pretrain_bad_input_and_nothing_to_do(iso_cache):
    r = _run(["paulo_fig1_matched_cosines", "smoke", "--set", "activations=sideways"], iso_cache)
    assert r.returncode == 2 and "activations='sideways'; valid: ['cached', 'streamed']" in r.stderr
    r = _run(["paulo_fig1_matched_cosines", "smoke", "--set", "nokey"], iso_cache)
    assert r.returncode == 2 and "expected key=value" in r.stderr
    r = _run(["heap_toy_models", "smoke"], iso_cache)
    assert r.returncode == 0 and "nothing to pretrain" in r.stdout


FIG4 = "paulo_fig4_overlap_vs_layer_position_arch"


def test_fig4_points_are_the_notebooks():
    """`pretrain.fig4_points` lists the points the notebook's own cell lists (run here on two profiles)."""
    import json

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / f"{FIG4}.ipynb").read_text())
    (cell,) = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "points = " in "".join(c["source"])]
    lines = [ln for ln in cell.splitlines() if ln.startswith(("first =", "points =", "points +="))]
    assert len(lines) == 4, cell
    for profile in ("smoke", "paper"):
        P = params.load(FIG4, profile)
        ns = {"P": P}
        exec("\n".join(lines), ns)
        assert pretrain.fig4_points(P) == ns["points"] and len(ns["points"]) > len(P.layers)


def test_pretrain_fig4_trains_every_hookpoint_in_one_pass_under_torchrun(iso_cache, monkeypatch):
    """Fig. 4's layer × size and kind pairs pre-trained under torchrun (2 gloo ranks, streamed: one pass for all
    hookpoints) are what the notebook's `hookpoint_pairs` looks up, and equal one process's training of a
    hookpoint alone (to float reassociation)."""
    overrides = ["activations=streamed", "stream_buffer_tokens=4096", "n_tokens=8192"]
    r = _run([FIG4, "smoke"] + [a for o in overrides for a in ("--set", o)], iso_cache, nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    P = params.load(FIG4, "smoke", **pretrain._overrides(overrides))
    points = pretrain.fig4_points(P)
    hps = list(dict.fromkeys(h for h, _ in points))
    assert f"on 2 rank(s): {2 * len(points)} seed SAEs at {len(hps)} hookpoints" in r.stdout
    assert f"{2 * len(points)} SAEs at {len(hps)} hookpoints:" in r.stderr  # the one pass's progress bar
    for fn in ("train_family", "train_families"):
        monkeypatch.setattr(runs, fn, lambda *a, **k: pytest.fail("the notebook retrained a pretrained SAE"))
    rows = runs.hookpoint_pairs(P, points, progress=False)
    assert len(rows) == len(points)
    monkeypatch.undo()
    from saesanity.sae.train import train_family

    h = hps[-1]
    acts = runs.data_for(P, "train", False, [h])[h][0]
    cfgs = [c for p, size in points if p == h for c in runs.point_cfgs(P, size)]
    cached = runs.train_many(P, acts, None, cfgs, False, hookpoint=h)
    alone = train_family(acts.source(cfgs[0]), cfgs, progress=False)
    for t, (sae, _) in zip(cached, alone):
        torch.testing.assert_close(t.sae.W_dec, sae.W_dec, rtol=1e-4, atol=1e-5)
