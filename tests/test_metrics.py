import math

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from saesanity.metrics import (ce_loss_score, cosine_sim, dead_fraction, explained_variance_saebench,
                               explained_variance_saelens_legacy, fvu, kl_next_token, kl_score, l0, l1_norm,
                               token_entropy)


def test_fvu_hand_computation():
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 5.0], [4.0, 0.0]])
    # mean = (3, 2); total = (4+0)+(0+4)+(4+4) = 16; error = 1 + 1 + 1 = 3
    assert fvu(x, x_hat).item() == pytest.approx(3 / 16)


def test_fvu_matches_sklearn_variance_weighted_r2():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, size=(200, 7))
    x_hat = x + rng.normal(0, 0.7, size=x.shape)
    ours = fvu(torch.from_numpy(x), torch.from_numpy(x_hat)).item()
    assert ours == pytest.approx(1 - r2_score(x, x_hat, multioutput="variance_weighted"), rel=1e-10)


def test_fvu_differs_from_saebench_and_saelens_legacy_on_large_mean():
    """A reconstruction that only predicts the mean explains nothing (FVU ≈ 1); SAEBench's core-eval
    formula (almost uncentred) calls it nearly perfect, and SAELens's legacy per-token mean of ratios
    is dominated by tokens near the mean."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(100.0, 1.0, size=(500, 4)))
    x_hat = torch.full_like(x, 100.0)  # predicts only the mean
    assert fvu(x, x_hat).item() == pytest.approx(1.0, abs=0.02)  # explains nothing
    assert explained_variance_saebench(x, x_hat).item() > 0.999  # looks perfect
    # hand: 1 − E‖e‖² / (E‖x‖² − m²), m = mean of x² over all entries
    m = (x ** 2).mean()
    hand = 1 - ((x - x_hat) ** 2).sum(1).mean() / ((x ** 2).sum(1).mean() - m ** 2)
    assert explained_variance_saebench(x, x_hat).item() == pytest.approx(hand.item())
    legacy = explained_variance_saelens_legacy(x, x_hat).item()
    per_token = 1 - ((x - x_hat) ** 2).sum(1) / ((x - x.mean(0)) ** 2).sum(1)
    assert legacy == pytest.approx(per_token.mean().item())
    assert abs(legacy - (1 - fvu(x, x_hat).item())) > 1e-3  # mean of ratios ≠ ratio of sums


def test_fvu_shape_error():
    with pytest.raises(ValueError, match="one shape"):
        fvu(torch.zeros(3, 2), torch.zeros(3, 3))


def test_l0():
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert l0(z).item() == pytest.approx(1.5)


def test_firing_frequency():
    from saesanity.metrics import firing_frequency

    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.5, 0.1], [0.0, 0.0, 7.0]])
    assert firing_frequency(z).tolist() == [0.0, 0.5, 1.0]


def test_dead_fraction_and_l1():
    assert dead_fraction(torch.tensor([0.0, 0.5, 0.0, 1e-6])) == 0.5
    z = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])
    assert l1_norm(z).item() == pytest.approx(3.0)  # (3 + 3) / 2


def test_cosine_sim_matches_sklearn():
    from sklearn.metrics.pairwise import cosine_similarity

    rng = np.random.default_rng(2)
    x, x_hat = rng.normal(size=(50, 6)), rng.normal(size=(50, 6))
    ref = np.diag(cosine_similarity(x, x_hat)).mean()
    assert cosine_sim(torch.from_numpy(x), torch.from_numpy(x_hat)).item() == pytest.approx(ref, rel=1e-10)


def test_ce_and_kl_scores_hand():
    assert ce_loss_score(ce_clean=3.0, ce_sae=3.5, ce_zero=8.0) == pytest.approx(0.9)  # (8 − 3.5) / (8 − 3)
    assert np.isnan(ce_loss_score(5.0, 5.2, 5.0))
    assert kl_score(kl_sae=0.2, kl_zero=2.0) == pytest.approx(0.9)
    assert np.isnan(kl_score(0.1, 0.0))


def test_kl_next_token_matches_scipy_and_saelens():
    from scipy.stats import entropy
    from sae_lens.evals import _kl

    rng = np.random.default_rng(3)
    a, b = torch.from_numpy(rng.normal(size=(4, 11))), torch.from_numpy(rng.normal(size=(4, 11)))
    ours = kl_next_token(a, b).numpy()
    pa, pb = torch.softmax(a, -1).numpy(), torch.softmax(b, -1).numpy()
    np.testing.assert_allclose(ours, [entropy(p, q) for p, q in zip(pa, pb)], rtol=1e-5)
    np.testing.assert_allclose(ours, _kl(a.float(), b.float()).numpy(), rtol=1e-4)


def test_token_entropy_matches_scipy():
    from scipy.stats import entropy

    top = np.array([[5, 5, 5, 5], [1, 2, 3, 4], [7, 7, 8, -1], [-1, -1, -1, -1]])
    h = token_entropy(top)
    assert h[0] == 0.0 and h[1] == pytest.approx(2.0)
    assert h[2] == pytest.approx(entropy([2, 1], base=2))
    assert np.isnan(h[3])


def test_massive_activation_stats_hand():
    from saesanity.baselines import massive_activation_stats

    x = np.ones((100, 4))
    x[:, 1] = np.arange(100) % 2  # variance 0.25 in dim 1
    x[7] = [0, 1000, 0, 0]  # one massive row
    s = massive_activation_stats(x)
    assert s["frac_rows_above"] == pytest.approx(0.01)
    assert s["top_dim_variance_share"] > 0.99  # dim 1 carries almost all variance
    assert s["max_over_median_norm"] == pytest.approx(1000 / np.median(np.linalg.norm(x, axis=1)))


def test_pooled_over_batches_is_each_definition_on_all_rows():
    """`Pooled` fed in uneven batches equals each metric's definition applied to the whole set at once."""
    from saesanity.metrics import Pooled, firing_frequency

    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) + 2.0
    x_hat = x + 0.3 * torch.randn(300, 6, generator=g, dtype=torch.float64)
    z = torch.relu(torch.randn(300, 10, generator=g, dtype=torch.float64) - 0.5)
    z[:, 7] = 0  # a dead latent
    mean = x.mean(0, keepdim=True)
    p = Pooled(mean, 10)
    for lo, hi in [(0, 7), (7, 128), (128, 300)]:
        p.update(x[lo:hi], x_hat[lo:hi], z[lo:hi])
    r = p.result()
    assert r["n_tokens"] == 300
    assert r["fvu"] == pytest.approx(fvu(x, x_hat).item(), rel=1e-12)  # the batch mean of all rows = the set's
    assert r["l0"] == pytest.approx(l0(z).item(), rel=1e-6) and r["l1"] == pytest.approx(l1_norm(z).item(), rel=1e-12)
    assert r["cosine"] == pytest.approx(cosine_sim(x, x_hat).item(), rel=1e-12)
    np.testing.assert_allclose(r["frequency"], firing_frequency(z).numpy(), rtol=1e-6)
    assert r["dead_frac"] == pytest.approx(0.1)
    assert r["explained_variance_saelens_legacy"] == pytest.approx(
        explained_variance_saelens_legacy(x, x_hat).item(), rel=1e-12)
    assert r["explained_variance_saebench"] == pytest.approx(explained_variance_saebench(x, x_hat).item(), rel=1e-12)
    with pytest.raises(ValueError, match="no rows were evaluated"):
        Pooled(mean, 10).result()


def test_bigram_keys_of_two_splits_share_one_packing():
    from saesanity.metrics import ngram_keys

    a, b = np.array([[1, 2, 3]]), np.array([[1, 2, 9]])  # the largest id differs between the splits
    np.testing.assert_array_equal(ngram_keys(a, 2, vocab=10), [1 * 10 + 2, 2 * 10 + 3])
    np.testing.assert_array_equal(ngram_keys(b, 2, vocab=10)[:1], ngram_keys(a, 2, vocab=10)[:1])
    assert ngram_keys(a, 2)[0] != ngram_keys(b, 2)[0]  # each split's own default packing: not comparable
    with pytest.raises(ValueError, match="vocab=5"):
        ngram_keys(b, 2, vocab=5)


def test_ngram_keys_and_the_token_lookup_null_by_hand():
    from saesanity.metrics import lookup_fvu, ngram_keys

    seqs = np.array([[5, 1, 2, 1], [5, 2, 1, 2]])
    np.testing.assert_array_equal(ngram_keys(seqs, 1), [1, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(ngram_keys(seqs, 2), [5 * 6 + 1, 1 * 6 + 2, 2 * 6 + 1, 5 * 6 + 2, 2 * 6 + 1, 1 * 6 + 2])
    with pytest.raises(ValueError, match="order 1 or 2"):
        ngram_keys(seqs, 2, drop_first=0)
    # training rows: token 1 -> [0, 0] and [2, 0] (mean [1, 0]); token 2 -> [0, 4]; global mean [2/3, 4/3]
    tx = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
    tk = np.array([1, 1, 2])
    ex = np.array([[1.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    ek = np.array([1, 2, 7])  # token 7 unseen: the global training mean
    # residuals: 0, 0, ‖[1, 1] − [2/3, 4/3]‖² = 2/9, over the eval rows' variance about their own mean
    mean = ex.mean(0)
    total = ((ex - mean) ** 2).sum()
    assert lookup_fvu(tx, [tk], ex, [ek], lambdas=[0]) == pytest.approx((2 / 9) / total)
    # a bigram keying replaces the unigram's mean where it was seen (first eval row: [0, 0], residual 1) and
    # leaves the unigram's (or the global) prediction where it was not
    assert lookup_fvu(tx, [tk, np.array([10, 11, 12])], ex, [ek, np.array([10, 99, 99])],
                      lambdas=[0, 0]) == pytest.approx((1 + 2 / 9) / total)
    # shrunk with λ = 1 toward the global mean g = [2/3, 4/3]: token 1 (n = 2, S = [2, 0]) -> (S + g)/3 =
    # [8/9, 4/9], residual 1/81 + 16/81; token 2 (n = 1, S = [0, 4]) -> (S + g)/2 = [1/3, 8/3], residual 17/9
    assert lookup_fvu(tx, [tk], ex, [ek], lambdas=[1]) == pytest.approx((17 / 81 + 17 / 9 + 2 / 9) / total)
    # λ = ∞ ignores the keying: the global mean for every row
    g = tx.mean(0)
    assert lookup_fvu(tx, [tk], ex, [ek], lambdas=[math.inf]) == pytest.approx(((ex - g) ** 2).sum() / total)
    with pytest.raises(ValueError, match="one entry per row"):
        lookup_fvu(tx, [tk[:2]], ex, [ek])
    with pytest.raises(ValueError, match="one lambda >= 0 per keying"):
        lookup_fvu(tx, [tk], ex, [ek], lambdas=[-1])


def test_lookup_lambdas_is_the_cross_validated_choice():
    """`lookup_lambdas` picks, level by level, the grid value with the least error on each contiguous half
    predicted from the other (brute force here through `lookup_fvu` with each λ given); informative keys get
    a small λ, keys that carry nothing a large one, and then the null is no worse than the mean."""
    from saesanity.metrics import LOOKUP_LAMBDAS, lookup_fvu, lookup_lambdas

    rng = np.random.default_rng(0)
    n, d = 2000, 3
    halves = [(np.arange(n // 2, n), np.arange(n // 2)), (np.arange(n // 2), np.arange(n // 2, n))]

    def brute(x, keys):
        chosen = []
        for level in range(len(keys)):
            err = []
            for lam in LOOKUP_LAMBDAS:
                e = 0.0
                for fit, held in halves:
                    y = x[held]
                    total = ((y - y.mean(0)) ** 2).sum()
                    e += total * lookup_fvu(x[fit], [k[fit] for k in keys[:level + 1]], y,
                                            [k[held] for k in keys[:level + 1]], lambdas=chosen + [lam])
                err.append(e)
            best = min(err)
            chosen.append(max(lam for lam, v in zip(LOOKUP_LAMBDAS, err) if v <= best * (1 + 1e-9)))
        return chosen

    informative = rng.integers(0, 20, n)
    x_inf = rng.normal(size=(20, d))[informative] + 0.3 * rng.normal(size=(n, d))
    noise_keys = rng.integers(0, 1500, n)  # ~1.3 rows a key: their means are noise
    x_noise = rng.normal(size=(n, d))
    for x, keys in [(x_inf, [informative]), (x_noise, [noise_keys]), (x_inf, [informative, noise_keys]),
                    (x_inf, [noise_keys, informative])]:  # the last: λ_1 large, then a bigram shrunk toward ~the mean
        assert lookup_lambdas(x, keys) == brute(x, keys)
    assert lookup_lambdas(x_inf, [noise_keys, informative])[0] >= 256
    assert lookup_lambdas(x_inf, [informative])[0] <= 1
    assert lookup_lambdas(x_noise, [noise_keys])[0] >= 256
    assert lookup_lambdas(x_inf, [informative, noise_keys])[1] >= 256  # a useless second keying is dropped
    ex = rng.normal(size=(500, d))
    ek = rng.integers(0, 1500, 500)
    assert lookup_fvu(x_noise, [noise_keys], ex, [ek], lambdas=[0]) > 1.2  # the plain means overfit
    assert lookup_fvu(x_noise, [noise_keys], ex, [ek]) < 1.02
    with pytest.raises(ValueError, match="folds >= 2"):
        lookup_lambdas(x_noise, [noise_keys], folds=1)
    bad = x_noise.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        lookup_lambdas(bad, [noise_keys])


def test_lookup_predict_is_row_by_row():
    """`lookup_predict` is the prediction `lookup_fvu` scores, and a row's prediction does not depend on the
    other evaluation rows: its FVU on a shard of them is `lookup_fvu` on that shard (what the noise floor of
    `baselines.lookup_null` measures)."""
    from saesanity.metrics import fvu, lookup_fvu, lookup_predict

    rng = np.random.default_rng(1)
    keys, ek = rng.integers(0, 30, 600), rng.integers(0, 40, 200)
    x, y = rng.normal(size=(600, 4)) + keys[:, None] * 0.1, rng.normal(size=(200, 4)) + ek[:, None] * 0.1
    pred = lookup_predict(x, [keys], [ek], [4.0], 200)
    assert float(fvu(torch.from_numpy(y), pred)) == pytest.approx(lookup_fvu(x, [keys], y, [ek], lambdas=[4.0]))
    s = slice(50, 90)
    assert float(fvu(torch.from_numpy(y[s]), pred[s])) == pytest.approx(
        lookup_fvu(x, [keys], y[s], [ek[s]], lambdas=[4.0]))
    with pytest.raises(ValueError, match="one entry per row"):
        lookup_predict(x, [keys], [ek], [4.0], 199)


def test_shard_spread_and_beyond_noise_by_hand():
    from saesanity.metrics import beyond_noise, shard_spread

    rows = np.arange(7.0)[:, None]  # shards of 3 rows: [0, 1, 2], [3, 4, 5]; row 6 dropped
    r = shard_spread(lambda x: x.mean(), rows, 2)
    assert r["values"] == [1.0, 4.0] and r["mean"] == 2.5 and r["sd"] == pytest.approx(np.std([1, 4], ddof=1))
    with pytest.raises(ValueError, match="n_shards >= 2"):
        shard_spread(lambda x: x.mean(), rows, 1)
    assert beyond_noise(1.0, 1.5, 0.1, 0.1) and not beyond_noise(1.0, 1.2, 0.1, 0.1)  # 2·√0.02 = 0.283


def test_seed_spread_keeps_the_first_seeds_row_and_the_sd_over_all():
    from saesanity.metrics import seed_spread, spread

    calls = []

    def run(seed):
        calls.append(seed)
        return {"a": float(seed) ** 2, "b": -float(seed), "tag": f"s{seed}"}

    r = seed_spread(run, range(3, 6), ["a", "b"])
    assert calls == [3, 4, 5] and r["tag"] == "s3" and r["a"] == 9.0  # each seed run once; the first is reported
    assert r["a_seed_values"] == [9.0, 16.0, 25.0] and r["a_seed_sd"] == pytest.approx(np.std([9, 16, 25], ddof=1))
    assert r["b_seed_sd"] == pytest.approx(1.0) and "tag_seed_sd" not in r
    with pytest.raises(ValueError, match="at least 2"):
        seed_spread(run, [1], ["a"])
    with pytest.raises(ValueError, match="at least 2"):
        spread([0.5])


def test_paired_beyond_noise_is_scipys_paired_t_test():
    """Shard-paired: a small difference that every shard shows is beyond noise although the shards' own spread
    (shared by both metrics) is large; the verdict is scipy's `ttest_rel` at 5%."""
    from scipy.stats import ttest_rel

    from saesanity.metrics import beyond_noise, paired_beyond_noise

    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.normal(size=5)
        b = a + rng.normal(0.3, 0.3, size=5) * rng.integers(0, 2)
        assert paired_beyond_noise(a, b) == (ttest_rel(a, b).pvalue < 0.05)
    hard = np.array([0.10, 0.30, 0.15, 0.50, 0.20])  # shards of very different difficulty
    assert paired_beyond_noise(hard, hard + 0.01 + np.array([0, 1, -1, 1, -1]) * 1e-3)
    assert not beyond_noise(hard.mean(), hard.mean() + 0.01, hard.std(ddof=1), hard.std(ddof=1))  # unpaired: no
    assert paired_beyond_noise([1.0, 2.0], [0.5, 1.5]) and not paired_beyond_noise([1.0, 2.0], [1.0, 2.0])  # sd 0
    with pytest.raises(ValueError, match="one length"):
        paired_beyond_noise([1.0, 2.0], [1.0, 2.0, 3.0])


def test_shared_effects_spread_kappa_by_simulation():
    """The design factor κ of `shared_effects_spread` is what the spread of a design's numbers sees of the members'
    variance: simulated pairs of 5 seeds (number = α_i + α_j + ε) have E[s²] = σ_e² + κσ² with κ = 4/3, while one
    pair varies by 2σ² + σ_e²; the reported sd bounds it (factor √(m/κ) = √1.5 at σ_e = 0)."""
    import itertools

    from saesanity.metrics import shared_effects_spread

    pairs = list(itertools.combinations(range(5), 2))
    rng = np.random.default_rng(0)
    s2 = []
    for _ in range(4000):
        a, e = rng.standard_normal(5), 0.5 * rng.standard_normal(len(pairs))
        s2.append(np.var([a[i] + a[j] + e[k] for k, (i, j) in enumerate(pairs)], ddof=1))
    assert np.mean(s2) == pytest.approx(0.25 + 4 / 3, rel=0.03)  # not 0.25 + 2: the pairs move together
    got = shared_effects_spread([1.0, 2.0, 4.0] + [0.0] * 7, pairs)
    assert got["sd_factor"] == pytest.approx(1.5**0.5) and got["sd"] == pytest.approx(got["spread_sd"] * 1.5**0.5)
    assert shared_effects_spread([1.0, 3.0], [(0,), (1,)])["sd_factor"] == 1.0  # independent numbers: their own sd
    with pytest.raises(ValueError, match="one member set of one size"):
        shared_effects_spread([1.0, 2.0], [(0, 1), (2,)])
