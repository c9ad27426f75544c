"""Data nulls (saesanity.nulls): the statistics each kind keeps, the ones it destroys, the batch stream's
determinism, and SAEs trained on them through the cached pipeline."""

import dataclasses

import numpy as np
import pytest
import torch

from saesanity import nulls, runs
from saesanity.nulls import NullData, moments
from saesanity.sae import TrainConfig


def _ref(n=4000, d=6, seed=0):
    """Correlated, heavy-tailed rows with a large mean: column 1 copies column 0, column 2 is sparse, column 5 constant."""
    g = np.random.default_rng(seed)
    x = g.standard_exponential((n, d)) ** 2 + 100.0
    x[:, 1] = x[:, 0]
    x[:, 2] = np.where(g.random(n) < 0.05, x[:, 2], 0.0)
    x[:, 5] = 7.0
    return x.astype(np.float32)


def test_moments_match_numpy_and_survive_a_large_mean_in_chunks():
    x = _ref()
    mean, cov = moments(x, chunk=512)  # 8 chunks, the last one short
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 rows"):
        moments(x[:1])


def test_gaussian_null_keeps_mean_and_covariance_and_nothing_else():
    x = _ref()
    null = NullData("gaussian", x, "ref")
    y = null.draw(200_000, seed=0, stream=0).numpy().astype(np.float64)
    mean, cov = moments(x)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(y.mean(0), mean, atol=0.02 * sd.max())
    np.testing.assert_allclose(np.cov(y, rowvar=False), cov, atol=0.02 * cov.max())
    assert np.allclose(y[:, 5], 7.0, atol=1e-4)  # a constant dimension (singular covariance) stays constant
    np.testing.assert_allclose(y[:, 1], y[:, 0], atol=1e-2 * sd[0])  # perfectly correlated columns stay so
    # the sparse column is dense now: nearly no entry at its real mode 0 (a Gaussian has no point mass)
    assert (np.abs(y[:, 2]) < 1e-3).mean() < 0.01 < (x[:, 2] == 0).mean()


def test_shuffled_null_keeps_each_marginal_and_drops_dependence():
    x = _ref()
    null = NullData("shuffled", x, "ref")
    y = null.draw(100_000, seed=0, stream=0).numpy()
    for j in range(x.shape[1]):  # every value drawn is a value of that column
        assert np.isin(y[:, j], x[:, j]).all()
    assert abs((y[:, 2] == 0).mean() - (x[:, 2] == 0).mean()) < 0.01  # the sparse column keeps its zeros
    np.testing.assert_allclose(np.sort(y[:, 0])[::1000], np.quantile(x[:, 0], np.linspace(0, 1, 100_000)[::1000]),
                               rtol=0.05)  # the same distribution (quantiles)
    assert np.corrcoef(x[:, 0], x[:, 1])[0, 1] == pytest.approx(1.0)
    assert abs(np.corrcoef(y[:, 0], y[:, 1])[0, 1]) < 0.02  # the copy is independent now


def test_null_stream_is_a_function_of_seed_and_step_and_slices_by_rank():
    x = _ref(n=500)
    null = NullData("gaussian", x, "ref", seed=3)
    cfg = TrainConfig(d_sae=16, k=2, batch_size=64, n_tokens=64 * 5, data_seed=1)
    src, longer = null.source(cfg), null.source(dataclasses.replace(cfg, n_tokens=64 * 9))
    assert src.n_steps == 5 and src.d_in == 6
    torch.testing.assert_close(src.batch(2), longer.batch(2), rtol=0, atol=0)  # a shorter run is a prefix
    assert not torch.equal(src.batch(2), src.batch(3))
    torch.testing.assert_close(torch.cat([src.batch(1, r, 4) for r in range(4)]), src.batch(1), rtol=0, atol=0)
    other = NullData("gaussian", x, "ref", seed=4).source(cfg)
    assert not torch.equal(src.batch(0), other.batch(0))
    assert not np.array_equal(null.sample(64), src.batch(0).numpy())  # held-out rows: another stream
    with pytest.raises(IndexError):
        src.batch(5)


def test_null_data_rejects_bad_input():
    with pytest.raises(ValueError, match="valid"):
        NullData("uniform", _ref(), "ref")
    with pytest.raises(ValueError, match="reference rows"):
        NullData("gaussian", np.zeros(10, np.float32), "ref")


def test_null_pairs_train_cached_keyed_by_kind_and_reference(iso_cache, monkeypatch):
    from saesanity import params
    from saesanity.matching import SharedRule

    P = params.load("consistency_seeds", "smoke")
    x = _ref(n=2048, d=8)
    cfgs = [TrainConfig(d_sae=32, k=2, batch_size=256, n_tokens=1024, seed=s) for s in (0, 1)]
    held = x[:512]
    stats = {k: runs.pair_stats(P, NullData(k, x, "ref"), None, cfgs, held, SharedRule(0.7), progress=False)
             for k in nulls.KINDS}
    for st in stats.values():
        assert 0 <= st["shared_frac"] <= 1 and -1 <= st["pw_mcc_signed"] <= st["pw_mcc_absolute"] <= 1
        assert st["fvu"] > 0 and st["n_tokens"] == 1024
    paths = {k: runs.train_many(P, NullData(k, x, "ref"), None, cfgs, False)[0].path for k in nulls.KINDS}
    assert len(set(paths.values())) == 2  # one SAE per kind
    monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("retrained a cached null SAE"))
    again = runs.train_many(P, NullData("gaussian", x, "ref"), None, cfgs, False)[0]
    assert again.path == paths["gaussian"]
    assert not runs.is_trained(None, cfgs[0], NullData("gaussian", x, "other-ref"))  # the reference is in the key
