"""Matryoshka levels: `runs.level_metrics` against a hand computation."""

import numpy as np
import pytest
import torch

from saesanity import runs
from saesanity.sae import MatryoshkaBatchTopKSAE


def test_level_metrics_by_hand():
    """Each level's FVU is Σ‖x − (z[:, :m] W_dec[:m] + b_dec)‖² / Σ‖x − x̄‖² with z the full code and x̄ the whole set's
    mean, its L0 the mean count of active latents among the first m; the last level is `evaluate_all`'s; batches
    do not change it."""
    torch.manual_seed(0)
    sae = MatryoshkaBatchTopKSAE(6, 20, 3, widths=(4, 10), seed=1)
    sae.threshold.fill_(0.05)
    acts = (np.random.default_rng(0).standard_normal((300, 6)) + 0.5).astype(np.float32)
    x = torch.from_numpy(acts)
    with torch.no_grad():
        z = sae.encode(x)
        want = []
        for m in (4, 10, 20):
            xh = z[:, :m] @ sae.W_dec[:m] + sae.b_dec
            want.append((float((x - xh).pow(2).sum() / (x - x.mean(0)).pow(2).sum()), float((z[:, :m] > 0).sum(1).float().mean())))
    got = runs.level_metrics(sae, acts, sae.nested_widths, batch=64)
    assert [g["width"] for g in got] == [4, 10, 20]
    for g, (fvu, l0) in zip(got, want):
        assert g["fvu"] == pytest.approx(fvu, rel=1e-5) and g["l0"] == pytest.approx(l0)
    assert want[0][1] < want[1][1] < want[2][1]  # the test can tell the levels apart
    full = runs.evaluate_all(sae, acts)
    assert got[-1]["fvu"] == pytest.approx(full["fvu"], rel=1e-6) and got[-1]["l0"] == pytest.approx(full["l0"])
    with pytest.raises(ValueError, match="ending at the SAE's 20 latents"):
        runs.level_metrics(sae, acts, (4, 10))
    with pytest.raises(ValueError, match="strictly increasing"):
        runs.level_metrics(sae, acts, (10, 4, 20))


def test_level_metrics_noise_floor():
    """With noise_shards, each level's `fvu_shard_sd` / `l0_shard_sd` is the sd (ddof 1) of that level's FVU / L0
    on each contiguous shard scored alone; the whole-set numbers do not change; too few rows a shard: left out."""
    torch.manual_seed(0)
    sae = MatryoshkaBatchTopKSAE(6, 20, 3, widths=(4, 10), seed=1)
    sae.threshold.fill_(0.05)
    acts = (np.random.default_rng(1).standard_normal((403, 6)) + 0.5).astype(np.float32)
    plain = runs.level_metrics(sae, acts, sae.nested_widths, batch=64)
    got = runs.level_metrics(sae, acts, sae.nested_widths, batch=64, noise_shards=4)
    shards = [runs.level_metrics(sae, acts[i * 100:(i + 1) * 100], sae.nested_widths, batch=64) for i in range(4)]  # 3 rows left
    for g, (p, row) in enumerate(zip(plain, got)):
        assert row["fvu"] == p["fvu"] and row["l0"] == p["l0"]
        for k in ("fvu", "l0"):
            want = np.std([s[g][k] for s in shards], ddof=1)
            assert want > 0 and row[f"{k}_shard_sd"] == pytest.approx(want, rel=1e-6)
    assert "fvu_shard_sd" not in runs.level_metrics(sae, acts[:7], sae.nested_widths, noise_shards=4)[0]
