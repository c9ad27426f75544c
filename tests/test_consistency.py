"""saesanity.consistency: PW-MCC (signed, absolute, mean max |cos|) by hand and against SAELens' MCC,
reappearance, reconstruction share, unstable-subspace angles and their chance levels."""

import math

import numpy as np
import pytest
import torch
from sae_lens.synthetic.evals import mean_correlation_coefficient

from saesanity import consistency as cs
from saesanity.matching import MatchingError, match_pair
from saesanity.sae.arch import ReLUSAE
from saesanity.sae.train import TrainConfig, make_sae


def test_pw_mcc_forms_by_hand():
    # C = [[-1, 1/√2], [0, 1/√2]]: the signed matching takes (0→1, 1→0) = 1/√2 + 0, the absolute one
    # (0→0, 1→1) = 1 + 1/√2; the row maxima of |C| are 1 and 1/√2
    A = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    B = torch.tensor([[-1.0, 0.0], [1.0, 1.0]])
    r = cs.pw_mcc(A, B)
    h = 1 / math.sqrt(2)
    assert r["signed"] == pytest.approx(h / 2)
    assert r["absolute"] == pytest.approx((1 + h) / 2)
    assert r["mean_max_abs"] == pytest.approx((1 + h) / 2)


@pytest.mark.parametrize("G", [30, 40])
def test_absolute_pw_mcc_is_saelens_mcc_and_bounds_the_signed_form(G):
    A, B = cs.random_dictionary(30, 6, 0), cs.random_dictionary(G, 6, 1)
    r = cs.pw_mcc(A, B)
    assert r["absolute"] == pytest.approx(mean_correlation_coefficient(A, B), abs=1e-6)
    assert r["signed"] <= r["absolute"] + 1e-7 and r["absolute"] <= r["mean_max_abs"] + 1e-7


def test_a_permuted_sign_flipped_copy():
    A = cs.random_dictionary(16, 5, 3)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    signs = torch.ones(16)
    signs[::2] = -1
    B = (A * signs[:, None])[perm]
    r = cs.pw_mcc(A, B)
    assert r["absolute"] == pytest.approx(1.0) and r["mean_max_abs"] == pytest.approx(1.0)
    assert r["signed"] < 0.99
    assert cs.pw_mcc(A, A[perm])["signed"] == pytest.approx(1.0)


def test_signed_pw_mcc_is_the_mean_matched_decoder_cosine_of_our_matching():
    a, b = make_sae(TrainConfig(d_sae=24, k=2, seed=0), 8), make_sae(TrainConfig(d_sae=24, k=2, seed=1), 8)
    m, _ = match_pair(a, b, method="scipy")
    assert cs.pw_mcc_of(m) == pytest.approx(cs.pw_mcc(a.W_dec, b.W_dec)["signed"], abs=1e-6)


def test_chance_level_falls_with_dimension_and_is_below_a_copy():
    low, high = (cs.chance_pw_mcc(64, d, n_pairs=2)["absolute"]["mean"] for d in (4, 32))
    assert 0 < high < low < 1
    assert len(cs.chance_pw_mcc(8, 4, n_pairs=3)["signed"]["values"]) == 3


def test_absolute_form_refuses_a_dense_matrix_too_large():
    A = torch.zeros(cs.ABS_DENSE_MAX + 1, 2)
    with pytest.raises(MatchingError, match="absolute=False"):
        cs.pw_mcc(A, A)


def test_reappearance_by_hand():
    masks = np.ones((3, 3, 2), dtype=bool)
    masks[0, 1, 0] = False  # latent 0 of seed 0: in seed 2 only -> 1/2
    masks[0, 1, 1] = masks[0, 2, 1] = False  # latent 1 of seed 0: nowhere -> 0
    r = cs.reappearance(masks)
    assert r.shape == (3, 2)
    np.testing.assert_allclose(r[0], [0.5, 0.0])
    np.testing.assert_allclose(r[1:], 1.0)
    with pytest.raises(MatchingError, match="at least 3 seeds"):
        cs.reappearance(masks[:2, :2])
    with pytest.raises(MatchingError, match=r"\[n, n, F\]"):
        cs.reappearance(masks[0])


def test_reconstruction_share_by_hand():
    sae = ReLUSAE(2, 3, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]], dtype=np.float32)
    # z = relu(x W_enc): [1, 0, 1], [0, 2, 2], [0, 0, 0] -> Σ z² = [1, 4, 5]; decoder rows are unit
    np.testing.assert_allclose(cs.reconstruction_share(sae, x, batch=2), np.array([1, 4, 5]) / 10, rtol=1e-6)
    with pytest.raises(ValueError, match="no latent fired"):
        cs.reconstruction_share(sae, -np.abs(x) - 1)


def test_unstable_subspace_angles_by_hand_and_their_null():
    W_a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    W_b = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(cs.unstable_subspace_angles(W_a, W_b, [True, False], [True, False]), [45.0])
    np.testing.assert_allclose(cs.unstable_subspace_angles(W_a, W_b, [True, True], [True, True]), [0.0, 45.0],
                               atol=1e-6)
    null = cs.random_subspace_angles(5, 3, 3)  # 3 + 3 > 5: one dimension in common
    assert null.shape == (3,) and null[0] == pytest.approx(0.0, abs=1e-4) and null[-1] > 1.0
    # rank 1: the top singular direction of {e1, e1 + e3·0.1} is near e1; of {e1 + e2} it is (e1 + e2)/√2
    W_c = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.1]])
    assert cs.unstable_subspace_angles(W_c, W_b, [True, True], [True, False], rank=1)[0] == pytest.approx(
        45.0, abs=0.2)
    with pytest.raises(MatchingError, match="rank=3"):
        cs.unstable_subspace_angles(W_a, W_b, [True, True], [True, True], rank=3)
    with pytest.raises(MatchingError, match="no unstable latents"):
        cs.unstable_subspace_angles(W_a, W_b, [False, False], [True, False])


def test_step0_alignment_flags_a_shared_initialisation():
    same = [make_sae(TrainConfig(d_sae=64, k=2, seed=5), 16) for _ in range(2)]
    other = make_sae(TrainConfig(d_sae=64, k=2, seed=6), 16)
    assert cs.step0_alignment(*same)["aligned_at_start"] is True
    r = cs.step0_alignment(same[0], other)
    assert r["aligned_at_start"] is False and abs(r["step0_pw_mcc"] - r["chance_pw_mcc"]) < 0.1


def test_level_bands_and_band_sharing_by_hand():
    from saesanity.consistency import band_sharing, frequency_order, level_bands

    assert level_bands([2, 4], 6) == [(0, 2), (2, 4), (4, 6)]
    with pytest.raises(ValueError, match="strictly increasing"):
        level_bands([4, 2], 6)
    shared = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    bands = level_bands([2, 4], 6)
    assert band_sharing(shared, np.arange(6), bands) == [1.0, 0.5, 0.0]
    freq = np.array([0.1, 0.0, 0.5, 0.2, 0.5, 0.05])
    order = frequency_order(freq)
    assert order.tolist() == [2, 4, 3, 0, 5, 1]  # most frequent first, ties by index
    assert band_sharing(shared, order, bands) == [0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="cover"):
        band_sharing(shared, np.arange(5), bands)


def test_architecture_claims_by_hand():
    """consistency_matryoshka's checks on made-up rows: each verdict follows its comparison, and with TopK's
    seed-pair spread the shared fractions must differ by more than 2·√2 sd."""
    def numbers(mt_shared, floor_sd=None):
        rows = {"topk": {"shared_frac": 0.30, "pw_mcc_signed": 0.6, "frequency_bands": [0.5, 0.2]},
                "matryoshka": {"shared_frac": mt_shared, "pw_mcc_signed": 0.5, "frequency_bands": [0.4, 0.2],
                               "level_bands": [0.45, 0.1]}}
        out = {"architectures": rows, "pw_mcc_chance": {"mean": 0.15, "sd": 0.001}}
        if floor_sd is not None:
            out["topk_seed_pairs"] = {"sd": floor_sd, "values": [0.3] * 3}
        return out

    v = [c["verdict"] for c in cs.architecture_claims(numbers(0.32))]
    assert v == [True, True, False, True, False]  # above chance; shares more; lower PW-MCC; inner > outer; 0.45 < 0.5
    near = cs.architecture_claims(numbers(0.32, 0.01))[1]  # 0.02 < 2·√2·0.01 = 0.028
    assert near["verdict"] is False and near["ours"]["beyond noise"] is False and "noise floor" in near["claim"]
    far = cs.architecture_claims(numbers(0.34, 0.01))[1]
    assert far["verdict"] is True and far["ours"]["beyond noise"] is True
