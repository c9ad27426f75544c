"""Leask et al. stitching and meta-SAEs on hand-built SAEs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saesanity import stitching as ST
from saesanity.sae import TopKSAE


def _tied(dirs: np.ndarray, k: int) -> TopKSAE:
    """A TopK SAE with unit decoder rows `dirs` [F, D], encoder = decoder transposed, zero biases."""
    F_, D = dirs.shape
    sae = TopKSAE(D, F_, k, seed=0)
    w = torch.from_numpy(dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).float()
    with torch.no_grad():
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _orthonormal(n: int, d: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, n)))
    return q.T  # [n, d] orthonormal rows


def _data(dirs: np.ndarray, n: int = 4000, p: float = 0.08, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coef = (rng.random((n, dirs.shape[0])) < p) * rng.uniform(1, 2, (n, dirs.shape[0]))
    return (coef @ dirs).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    """S: 12 orthonormal directions; L: those 12 plus 8 planted new orthonormal ones (novel by construction)."""
    basis = _orthonormal(20, 48)
    small, large = _tied(basis[:12], k=4), _tied(basis[[*range(12), *range(12, 20)]], k=6)
    return small, large, _data(basis)


def test_novel_latents_are_exactly_the_planted_ones(planted):
    small, large, _ = planted
    m = ST.max_decoder_cos(small, large)
    np.testing.assert_allclose(m[:12], 1, atol=1e-5)
    assert np.all(m[12:] < 1e-5)
    g = ST.groups(small, large, 0.7)
    assert g.novel.tolist() == list(range(12, 20)) and g.dropped.size == 0
    assert sorted((s.tolist(), l.tolist()) for s, l in g.swap) == [([i], [i]) for i in range(12)]
    np.testing.assert_allclose(ST.novel_fraction(m, [0.5, 0.7]), [0.4, 0.4])


def test_inserting_novel_latents_lowers_mse_and_single_deltas_match(planted):
    small, large, x = planted
    st = ST.Stitcher(small, large, x)
    base = st.evaluate(np.arange(12), np.zeros(0, int))
    with_novel = st.evaluate(np.arange(12), np.arange(12, 20))
    with_dupes = st.evaluate(np.arange(12), np.arange(12))
    assert with_novel["mse"] < 0.8 * base["mse"]
    assert with_dupes["mse"] > base["mse"]  # reconstruction latents double what S already explains
    assert with_novel["l0"] > base["l0"]
    d = st.single_insert_delta(np.array([12, 3]))
    for j, dj in zip([12, 3], d):  # the closed form equals evaluating the insertion directly
        assert dj == pytest.approx(st.evaluate(np.arange(12), np.array([j]))["mse"] - base["mse"], rel=1e-4, abs=1e-6)
    assert d[0] < 0 < d[1]


def test_groups_join_split_latents_and_find_dropped_ones():
    b = _orthonormal(6, 16)
    a1, a2 = b[0] + 0.3 * b[1], b[0] - 0.3 * b[1]  # both ~0.96 to b0: a split of latent 0
    small = _tied(b[[0, 2, 3]], k=2)  # b3 has no counterpart in L
    large = _tied(np.stack([a1, a2, b[2], b[4]]), k=2)
    g = ST.groups(small, large, 0.7)
    swap = sorted((s.tolist(), l.tolist()) for s, l in g.swap)
    assert swap == [([0], [0, 1]), ([1], [2])]
    assert g.novel.tolist() == [3] and g.dropped.tolist() == [2]


def test_swap_path_runs_from_small_to_large(planted):
    small, large, x = planted
    st = ST.Stitcher(small, large, x)
    path = st.swap_path(ST.groups(small, large, 0.7), seed=0)
    assert path[0]["step"] == "small" and path[0]["mse"] == pytest.approx(st.evaluate(np.arange(12), np.zeros(0, int))["mse"])
    assert path[-1]["n_small"] == 0 and path[-1]["n_large"] == 20
    assert path[-1]["mse"] == pytest.approx(st.large_mse, rel=1e-4)  # same b_dec (0): the end point is L
    assert len(path) == 1 + 12 + 8 and sorted(q["step"] for q in path[1:]) == ["novel"] * 8 + ["swap"] * 12
    # swapping a latent for its identical copy changes little (the two TopKs select slightly differently);
    # adding a planted direction only helps
    mse = np.array([q["mse"] for q in path])
    assert np.all(np.diff(mse) <= 1e-3 * mse[0]) and mse[-1] < 0.01 * mse[0]
    assert [q["n_small"] for q in path] == sorted((q["n_small"] for q in path), reverse=True)


def test_swap_path_running_sums_match_direct_evaluation():
    """On random SAEs with every kind of component, each path point equals evaluating its latent sets."""
    rng = np.random.default_rng(5)
    b = _orthonormal(24, 32, seed=7)
    small = _tied(np.r_[b[:10], rng.normal(size=(4, 32))], k=3)
    large = _tied(np.r_[b[:6] + 0.2 * b[10:16], b[16:24], rng.normal(size=(6, 32))], k=4)
    x = _data(np.r_[b, rng.normal(size=(5, 32))], n=600)
    st = ST.Stitcher(small, large, x)
    g = ST.groups(small, large, 0.7)
    assert g.swap and g.novel.size and g.dropped.size
    path = st.swap_path(g, seed=3)
    # replay the same order to know each point's latent sets
    empty = np.zeros(0, int)
    units = ([(s, l) for s, l in g.swap] + [(empty, np.array([j])) for j in g.novel] + [(np.array([i]), empty) for i in g.dropped])
    keep, add = set(range(14)), []
    for q, u in zip(path[1:], np.random.default_rng(3).permutation(len(units))):
        keep -= set(units[u][0].tolist())
        add += units[u][1].tolist()
        direct = st.evaluate(np.array(sorted(keep), dtype=int), np.array(add, dtype=int))
        assert q["mse"] == pytest.approx(direct["mse"], rel=1e-4) and q["l0"] == pytest.approx(direct["l0"], rel=1e-6)
        assert q["mse_shards"] == pytest.approx(direct["mse_shards"], rel=1e-4)  # the shards' running sums too
        assert np.mean(q["mse_shards"]) == pytest.approx(q["mse"], rel=1e-6)  # 600 rows: 5 whole shards of 120
    assert path[0]["mse_shards"] == pytest.approx(st.evaluate(np.arange(14), np.zeros(0, int))["mse_shards"])


def test_stitcher_shards_are_the_same_numbers_on_each_shard_alone(planted):
    """Each shard's MSE equals a Stitcher built on that shard's rows alone; 4,003 rows in 5 shards of 800 leave the
    last 3 rows in none; too few rows for the shards is refused."""
    small, large, x = planted
    x = np.r_[x, x[:3]]
    st = ST.Stitcher(small, large, x)
    ev = st.evaluate(np.arange(12), np.arange(12, 16))
    assert len(ev["mse_shards"]) == 5
    for i in range(5):
        alone = ST.Stitcher(small, large, x[800 * i:800 * (i + 1)], noise_shards=0)
        assert ev["mse_shards"][i] == pytest.approx(alone.evaluate(np.arange(12), np.arange(12, 16))["mse"], rel=1e-5)
        assert "mse_shards" not in alone.evaluate(np.arange(12), np.zeros(0, int))
    with pytest.raises(ValueError, match="noise_shards"):
        ST.Stitcher(small, large, x[:9])


def test_median_insert_delta_bootstrap_resamples_rows(planted, monkeypatch):
    """One resample equals the median ΔMSE of a Stitcher on the same resampled rows (the seed's first draw); planted
    novel latents give an interval below 0 that holds the full-data median; blocks of a few latents (the paper-scale
    memory bound) change nothing."""
    from saesanity.fits import bootstrap

    small, large, x = planted
    st = ST.Stitcher(small, large, x)
    novel = np.arange(12, 20)
    one = st.median_insert_delta_bootstrap(novel, n_boot=1, seed=4)
    idx = np.random.default_rng(4).integers(0, x.shape[0], x.shape[0])
    direct = np.median(ST.Stitcher(small, large, x[idx], noise_shards=0).single_insert_delta(novel))
    assert one["mean"] == pytest.approx(direct, rel=1e-5)
    b = st.median_insert_delta_bootstrap(novel, n_boot=100)
    assert b["hi"] < 0 and b["lo"] <= np.median(st.single_insert_delta(novel)) <= b["hi"]
    full = st.single_insert_delta(np.arange(20))
    monkeypatch.setattr(ST, "_CHUNK_ELEMS", 3 * x.shape[0])  # blocks of 3 latents: the same numbers
    np.testing.assert_allclose(st.single_insert_delta(np.arange(20)), full, rtol=1e-6, atol=1e-9)
    again = st.median_insert_delta_bootstrap(novel, n_boot=100)
    assert again["lo"] == pytest.approx(b["lo"], rel=1e-6) and again["hi"] == pytest.approx(b["hi"], rel=1e-6)
    assert b.keys() == bootstrap(lambda i: 0.0, 3, n_boot=2).keys()
    with pytest.raises(ValueError, match="at least one"):
        st.median_insert_delta_bootstrap(np.zeros(0, int))


def test_meta_sae_recovers_planted_atoms(iso_cache):
    """Base decoder rows are normalised sums colour + shape of 64 signed atoms (±16 orthonormal colour
    directions, ±16 shape directions: 1,024 rows, zero mean). A k=2 meta-SAE with 64 meta-latents finds
    most atoms (>= half at cosine > 0.9; 42–48 of 64 over seeds 0–2 when written) and reconstructs the rows
    far better than it reconstructs structureless rows. (BatchTopK lets some rows use one latent, so
    memorising frequent combinations competes with finding atoms: recovery is not total.)"""
    atoms = _orthonormal(32, 64, seed=3)
    cols, shps = np.concatenate([atoms[:16], -atoms[:16]]), np.concatenate([atoms[16:], -atoms[16:]])
    rows = np.stack([c + s for c in cols for s in shps])
    base = _tied(rows, k=2)
    cfg = ST.meta_cfg(64, 2, n_rows=1024, epochs=100, batch_size=256, lr=1e-3, seed=0)
    meta = ST.meta_sae(base, iso_cache / "base-sae", cfg, epochs=100, progress=False)
    signed = torch.from_numpy(np.concatenate([cols, shps])).float()
    found = (signed @ meta.W_dec.detach().T / meta.W_dec.detach().norm(dim=1)).max(1).values
    assert (found > 0.9).sum() >= 32, found
    ev = ST.decoder_fvu(meta, base)
    assert ev["fvu"] < 0.2 and ev["l0"] <= 3, ev
    noise = _tied(np.random.default_rng(0).normal(size=(1024, 64)), k=2)
    assert ST.decoder_fvu(ST.meta_sae(noise, iso_cache / "noise-sae", cfg, epochs=100, progress=False), noise)["fvu"] > 0.5
    grp = ST.meta_groups(meta, base)
    assert sum(g["n_members"] for g in grp) >= 1024 and all(g["activations"] == sorted(g["activations"], reverse=True) for g in grp)
    again = ST.meta_sae(base, iso_cache / "base-sae", cfg, epochs=100, progress=False)  # cached
    torch.testing.assert_close(again.W_dec, meta.W_dec)


def test_path_summary_by_hand():
    from saesanity.stitching import path_summary

    path = [{"step": i, "mse": m, "l0": l0} for i, (m, l0) in enumerate([(4.0, 30), (3.0, 31), (1.5, 33), (2.0, 34)])]
    s = path_summary(path)
    assert s["spearman_mse_vs_step"] == pytest.approx(-0.8)
    assert s["max_excursion_beyond_endpoints"] == pytest.approx(0.25)  # 1.5 is 0.5 below the [2, 4] range of width 2
    assert "mid_above_ends_beyond_noise" not in s  # no shard values: no noise floor
    # with shards: a midpoint 2 above the higher end on every shard (± 0.1) is beyond noise; ends differ by 2
    sh = {0: [4.0, 4.1, 3.9], 1: [3.0] * 3, 2: [6.0, 6.05, 5.95], 3: [2.0, 2.0, 2.1]}
    bulge = [{"step": i, "mse": float(np.mean(sh[i])), "l0": 30, "mse_shards": sh[i]} for i in range(4)]
    b = path_summary(bulge)  # midpoint = step 2 (4 // 2)
    assert b["mid_minus_higher_end"] == pytest.approx(2.0) and b["mid_above_ends_beyond_noise"] is True
    assert b["ends_differ_beyond_noise"] is True
    sh[2] = [4.0, 5.9, 4.1]  # above the start on average (4.67 > 4.0) but not on every shard consistently
    b = path_summary([{**q, "mse": float(np.mean(sh[q["step"]])), "mse_shards": sh[q["step"]]} for q in bulge])
    assert b["mid_minus_higher_end"] > 0 and b["mid_above_ends_beyond_noise"] is False
    assert s["mse_start_mid_end"] == [4.0, 1.5, 2.0] and s["l0_start_end"] == [30, 34]
    with pytest.raises(ValueError, match="two steps"):
        path_summary(path[:1])


def test_prefix_reconstruction_by_hand():
    """L's latents 0, 2 are S's directions (cos 1), 1 is at cos 0.6 to S's first, 3 is orthogonal to S."""
    b = _orthonormal(4, 8)
    small = _tied(b[[0, 1]], k=1)
    large = _tied(np.stack([b[0], 0.6 * b[0] + 0.8 * b[2], b[1], b[3]]), k=1)
    assert ST.prefix_reconstruction(large, small, np.arange(4), 0.7) == {"prefix": 0.5, "rest": 0.5}
    assert ST.prefix_reconstruction(large, small, np.array([0, 2, 1, 3]), 0.7) == {"prefix": 1.0, "rest": 0.0}
    assert ST.prefix_reconstruction(large, small, np.array([0, 2, 1, 3]), 0.5) == {"prefix": 1.0, "rest": 0.5}
    with pytest.raises(ValueError, match="must list"):
        ST.prefix_reconstruction(large, small, np.arange(3), 0.7)


def test_matryoshka_family_levels_scale_with_size_and_bad_levels_are_refused():
    from saesanity import params

    P = params.load("leask_matryoshka", "default")
    assert [ST.matryoshka_widths_at(P, s) for s in P.sizes] == [(72, 288, 576), (144, 576, 1152), (288, 1152, 2304)]
    with pytest.raises(params.ParamsError, match="whole widths"):
        params.load("leask_matryoshka", "default", matryoshka_widths=[101, 1152, 2304])  # 101 / 4 is not whole
    with pytest.raises(params.ParamsError, match="strictly increasing"):
        params.load("leask_matryoshka", "default", matryoshka_widths=[1152, 288])
    with pytest.raises(params.ParamsError, match="trains both families"):
        params.load("leask_matryoshka", "default", release="gpt2-small-res-jb-feature-splitting",
                    release_id="blocks.8.hook_resid_pre_{size}")


def test_matryoshka_claims_compute_each_verdict():
    pre = lambda p, r: {"prefix": p, "rest": r}  # noqa: E731
    numbers = {"novel_mean": {"topk": 0.6, "matryoshka": 0.4},
               "prefix": {"matryoshka": {"1152": {"by_index": pre(0.9, 0.2), "by_frequency": pre(0.5, 0.3)},
                                         "2304": {"by_index": pre(0.8, 0.3), "by_frequency": pre(0.5, 0.3)}},
                          "topk": {"1152": {"by_frequency": pre(0.95, 0.3)}, "2304": {"by_frequency": pre(0.6, 0.4)}}},
               "meta": {"topk": [{"fvu": 0.5, "fvu_seed_sd": 0.01}, {"fvu": 0.4, "fvu_seed_sd": 0.01}],
                        "matryoshka": [{"fvu": 0.6, "fvu_seed_sd": 0.01}, {"fvu": 0.3, "fvu_seed_sd": 0.01}]}}
    assert [c["verdict"] for c in ST.matryoshka_claims(numbers)] == [True, True, False, False]
    numbers["meta"]["matryoshka"][1]["fvu"] = 0.45  # higher at both sizes, by 0.1 and 0.05 > 2·√2·0.01 = 0.028
    assert ST.matryoshka_claims(numbers)[-1]["verdict"] is True
    numbers["meta"]["matryoshka"][1]["fvu_seed_sd"] = 0.02  # 2·√(0.02² + 0.01²) = 0.045 < 0.05: still beyond
    assert ST.matryoshka_claims(numbers)[-1]["verdict"] is True
    numbers["meta"]["matryoshka"][1]["fvu_seed_sd"] = 0.03  # 2·√(0.03² + 0.01²) = 0.063 > 0.05: within noise
    assert ST.matryoshka_claims(numbers)[-1]["verdict"] is False


def test_meta_family_noise_floor_is_the_spread_over_meta_sae_seeds(iso_cache):
    """Each width's reported meta-SAE is seed P.seeds[0]'s; its `fvu_seed_sd` is the sd (ddof 1) of the decoder
    FVU of the same width retrained with the next seeds, on the decoder rows and on the Gaussian rows."""
    from types import SimpleNamespace

    base = SimpleNamespace(sae=_tied(np.random.default_rng(1).normal(size=(96, 16)), k=2), path=iso_cache / "base")
    P = SimpleNamespace(seeds=[5, 6], meta_sizes=[8, 16], meta_k=2, meta_epochs=4, meta_batch_size=32, meta_lr=1e-3)
    rows = ST.meta_family(P, base, progress=False, n_seeds=3)
    assert [r["meta_size"] for r in rows] == [8, 16]
    for r in rows:
        for rec in (r, r["gaussian_rows"]):
            v = rec["fvu_seed_values"]
            assert len(v) == 3 and len(set(v)) == 3 and v[0] == rec["fvu"]  # seeds 5, 6, 7 differ; 5 is reported
            assert rec["fvu_seed_sd"] == pytest.approx(np.std(v, ddof=1))
        direct = ST.meta_sae(base.sae, base.path, ST.meta_cfg(r["meta_size"], 2, 96, 4, 32, 1e-3, 6), 4, progress=False)
        assert ST.decoder_fvu(direct, base.sae)["fvu"] == r["fvu_seed_values"][1]  # seed 6 is the second value
    with pytest.raises(ValueError, match="n_seeds >= 2"):
        ST.meta_family(P, base, progress=False, n_seeds=1)


def test_novel_fraction_seeds_over_the_four_seed_combinations(monkeypatch):
    """Each size pair's novel fraction for every (smaller seed, larger seed) of P.seeds[:2], equal to a direct
    `max_decoder_cos` + `novel_fraction` on those two SAEs; sd over the four (ddof 1); a release family: None."""
    import dataclasses
    from types import SimpleNamespace

    @dataclasses.dataclass(frozen=True)
    class Params:
        release: str | None
        seeds: list
        sizes: list

    sizes = [8, 16, 32]
    fams = {s: [SimpleNamespace(sae=TopKSAE(6, n, 2, seed=100 * s + n)) for n in sizes] for s in (3, 5)}
    monkeypatch.setattr(ST, "size_family", lambda P, progress=True: fams[P.seeds[0]])
    P = Params(None, [3, 5], sizes)
    got = ST.novel_fraction_seeds(P, [(0, 1), (1, 2)], 0.5)
    assert list(got) == ["8→16", "16→32"] and got["8→16"]["combos"] == ["3→3", "3→5", "5→3", "5→5"]
    for name, (i, j) in (("8→16", (0, 1)), ("16→32", (1, 2))):
        want = [ST.novel_fraction(ST.max_decoder_cos(fams[a][i].sae, fams[b][j].sae), [0.5])[0]
                for a in (3, 5) for b in (3, 5)]
        assert got[name]["values"] == pytest.approx(want) and got[name]["spread_sd"] == pytest.approx(np.std(want, ddof=1))
        assert got[name]["sd"] == pytest.approx(np.std(want, ddof=1) * 1.5**0.5)  # each SAE in 2 of the 4: κ = 4/3
    mean = ST.novel_mean_spread(got, ["8→16", "16→32"])  # the mean of both pairs, combination by combination
    assert mean["values"] == pytest.approx([(a + b) / 2 for a, b in zip(got["8→16"]["values"], got["16→32"]["values"])])
    assert mean["sd"] == pytest.approx(np.std(mean["values"], ddof=1) * 1.5**0.5)
    assert ST.novel_fraction_seeds(Params("r", [0, 1], sizes), [(0, 1)], 0.5) is None
