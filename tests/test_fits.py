import numpy as np
import pytest

from saesanity import fits


@pytest.mark.parametrize("name,true", [("power_offset", (0.5, -1.2, 0.3)), ("power", (0.6, -0.4)),
                                       ("exp_offset", (0.8, 0.7, 0.25))])
def test_recovers_known_parameters(name, true):
    N = np.arange(2, 20, dtype=float)
    fn = fits.MODELS[name][0]
    y = fn(N, *true) + np.random.default_rng(0).normal(0, 1e-4, N.size)
    f = fits.fit_model(name, N, y)
    assert f.converged
    np.testing.assert_allclose(list(f.params.values()), true, rtol=0.02, atol=2e-3)
    assert all(np.isfinite(list(f.stderr.values()))) and len(f.residuals) == N.size


def test_preferred_model_is_the_generating_one():
    N = np.arange(2, 15, dtype=float)
    y = fits.power_offset(N, 0.5, -1.0, 0.3) + np.random.default_rng(1).normal(0, 2e-4, N.size)
    all_fits = fits.fit_all(N, y)
    assert fits.preferred(all_fits) in ("power_offset",)
    assert all_fits["power_offset"].aic < all_fits["power"].aic


def test_aic_bic_hand_computation():
    N = np.array([2.0, 3, 4, 5, 6])
    y = fits.power(N, 1.0, -1.0) + np.array([0.01, -0.01, 0.0, 0.005, -0.005])
    f = fits.fit_model("power", N, y)
    rss = sum(r * r for r in f.residuals)
    assert f.rss == pytest.approx(rss)
    assert f.aic == pytest.approx(5 * np.log(rss / 5) + 4)
    assert f.bic == pytest.approx(5 * np.log(rss / 5) + 2 * np.log(5))


def test_bad_inputs():
    with pytest.raises(fits.FitError, match="needs more than 3 points"):
        fits.fit_model("power_offset", [2, 3, 4], [0.5, 0.4, 0.3])
    with pytest.raises(fits.FitError, match="unknown model 'linear'"):
        fits.fit_model("linear", [1, 2], [1, 2])


def test_bootstrap_interval_covers_the_mean():
    x = np.random.default_rng(0).normal(3.0, 1.0, 40)
    b = fits.bootstrap(lambda idx: x[idx].mean(), n_items=40, n_boot=300)
    assert b["lo"] < x.mean() < b["hi"] and b["sd"] == pytest.approx(1 / np.sqrt(40), rel=0.3)


def test_curve_weighted_by_bases_and_bootstrap():
    curve = {2: {"values": np.array([0.6, 0.4, 0.5]), "bases": np.array([0, 1, 2])},
             3: {"values": np.array([0.3, 0.5]), "bases": np.array([0, 1])}}
    N, mean = fits.curve_weighted_by_bases(curve, np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(mean, [0.5, 0.4])
    N, mean = fits.curve_weighted_by_bases(curve, np.array([2.0, 0.0, 1.0]))
    np.testing.assert_allclose(mean, [(1.2 + 0.5) / 3, 0.3])
    b = fits.bootstrap_over_bases(curve, 3, lambda N, m: m[0], n_boot=50)
    assert 0.4 <= b["lo"] <= b["hi"] <= 0.6


def test_fits_stay_within_the_fraction_bounds():
    """Four nearly flat points: unbounded, the offset fit wanders to c >> 1 with a < 0; bounded it must not."""
    N = np.array([2.0, 3, 4, 5])
    y = np.array([0.963, 0.951, 0.945, 0.940])
    for name, f in fits.fit_all(N, y).items():
        assert f.converged, name
        if "c" in f.params:
            assert 0 <= f.params["c"] <= 1 and f.params["a"] >= 0, (name, f.params)
        assert np.all(np.diff(f.predict(np.arange(2, 30))) <= 1e-12), name  # non-increasing


def test_median_bootstrap_is_the_bootstrap_of_the_nanmedian():
    """The median ignores NaN; the spread is `bootstrap` of np.nanmedian over resamples of the items (same seed ->
    the same resamples); constant items have sd 0."""
    from saesanity.fits import bootstrap_indices, median_bootstrap

    v = np.array([1.0, 2.0, np.nan, 4.0, 8.0, 3.0])
    got = median_bootstrap(v, n_boot=50, seed=3)
    assert got["median"] == 3.0 and got["n_boot"] == 50
    want = [np.nanmedian(v[i]) for i in bootstrap_indices(v.size, 50, 3)]
    want = np.array([w for w in want if np.isfinite(w)])
    assert got["sd"] == pytest.approx(np.std(want)) and got["sd"] > 0
    assert median_bootstrap(np.full(10, 2.5), n_boot=20)["sd"] == 0.0
