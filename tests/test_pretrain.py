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
    assert "on 2 rank(s): 2 seed SAEs at mlp_out.2" in r.stdout
    P = params.load(stem, "smoke", **pretrain._overrides(OVERRIDES))
    monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("the notebook retrained a pretrained SAE"))
    two, _ = runs.seed_saes(P, progress=False)
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
    assert [t.path.name for t in one] == [t.path.name for t in two]  # one key, whatever the launch
    for a, b in zip(one, two):
        torch.testing.assert_close(a.sae.W_dec, b.sae.W_dec, rtol=1e-4, atol=1e-5)


def test_pretrain_bad_input_and_nothing_to_do(iso_cache):
    r = _run(["paulo_fig1_matched_cosines", "smoke", "--set", "activations=sideways"], iso_cache)
    assert r.returncode == 2 and "activations='sideways'; valid: ['cached', 'streamed']" in r.stderr
    r = _run(["paulo_fig1_matched_cosines", "smoke", "--set", "nokey"], iso_cache)
    assert r.returncode == 2 and "expected key=value" in r.stderr
    r = _run(["heap_toy_models", "smoke"], iso_cache)
    assert r.returncode == 0 and "nothing to pretrain" in r.stdout
