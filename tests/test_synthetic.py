"""saesanity.synthetic: the ground-truth check of the consistency measures on sae_lens.synthetic data."""

import numpy as np
import pytest
import torch

from saesanity import params, synthetic
from saesanity.params import ParamsError


def test_recovered_fraction_by_hand():
    feats = np.eye(3, dtype=np.float32)
    W = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 1.0]])  # e1, −e2 (|cos| 1), (e2 + e3)/√2
    assert synthetic.recovered_fraction(W, feats) == pytest.approx(2 / 3)
    assert synthetic.recovered_fraction(W, feats, threshold=0.7) == pytest.approx(1.0)


def test_claims_follow_the_rows():
    rows = [{"k": k, "gt_mcc": g, "seed_shared": s, "seed_pw_mcc": s, "true_given_reappears": a, "true_given_not": b}
            for k, g, s, a, b in ((2, 0.5, 0.2, 0.9, 0.1), (4, 0.7, 0.4, 0.8, 0.2), (8, 0.6, 0.1, 0.3, 0.4))]
    shared, pw, per_latent = synthetic.claims({"rows": rows})
    assert shared["ours"]["spearman_rho"] == pytest.approx(0.5) and shared["verdict"] is True
    assert per_latent["verdict"] is False  # k = 8: 0.3 < 0.4


def test_the_sweep_is_cached_and_the_model_is_deterministic(iso_cache, monkeypatch):
    P = params.load("consistency_synthetic", "smoke", n_tokens=4096, ks=[2, 4])
    saes, feats, held = synthetic.sweep(P, progress=False)
    assert sorted(saes) == [2, 4] and len(saes[2]) == len(P.seeds) and feats.shape == (P.n_features, P.hidden_dim)
    np.testing.assert_array_equal(feats, synthetic.model(P).feature_dict.feature_vectors.detach().numpy())
    monkeypatch.setattr(synthetic, "train_family", lambda *a, **k: pytest.fail("retrained a cached sweep"))
    again, _, held2 = synthetic.sweep(P, progress=False)
    torch.testing.assert_close(again[4][1].W_dec, saes[4][1].W_dec, rtol=0, atol=0)
    np.testing.assert_array_equal(held, held2)
    rows = synthetic.evaluate(P, saes, feats, held)
    assert [r["k"] for r in rows] == [2, 4] and all(0 <= r["gt_mcc"] <= 1 and r["l0"] <= r["k"] for r in rows)


@pytest.mark.parametrize("change, message", [({"ks": [2, 2]}, "distinct"), ({"seeds": [0, 1]}, "at least 3"),
                                             ({"min_prob": 0.5, "max_prob": 0.1}, "min <= max"),
                                             ({"hierarchy_roots": 100}, "exceeds n_features")])
def test_bad_parameters_are_named(change, message):
    with pytest.raises(ParamsError, match=message):
        params.load("consistency_synthetic", "smoke", **change)


def test_the_streamed_source_draws_each_batch_once_the_same_everywhere_and_never_holds_the_rows():
    P = params.load("consistency_synthetic", "smoke")
    m = synthetic.model(P)
    src = synthetic.SyntheticSource(m, n_steps=4, batch_size=64, seed=7)
    b0, b1 = src.batch(0), src.batch(1)
    assert b0.shape == (64, P.hidden_dim) and torch.equal(src.batch(0), b0)  # the same rows on every call
    assert not torch.equal(b0, b1)  # a fresh draw each step
    assert torch.equal(torch.cat([src.batch(1, r, 2) for r in range(2)]), b1)  # ranks split the global batch
    assert torch.equal(src.init_batch(1, 2), b0)
    assert torch.equal(b1, torch.from_numpy(synthetic.sample(m, 64, seed=7 + 1 + 1)))  # batch s: seed + 1 + s
    with pytest.raises(IndexError, match="batch 4 of a 4-step"):
        src.batch(4)
    assert not any(isinstance(v, np.ndarray) and v.shape[0] > 64 for v in vars(src).values())
