import numpy as np
import pytest
import torch

from saesanity import toy
from saesanity.sae import TopKSAE


def test_sparse_source_statistics():
    src = toy.SparseSource(n_features=40, d=8, p=0.1, seed=3)
    f = src.directions()
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
    x = src.sample(20000)
    # E[x] = p · E[U(0,1)] · Σ_i f_i = 0.05 Σ_i f_i
    np.testing.assert_allclose(x.mean(0), 0.05 * f.sum(0), atol=0.02)
    with pytest.raises(toy.ToyError, match="0 < p <= 1"):
        toy.SparseSource(10, 4, p=0.0)


def test_random_mlp_depth_zero_is_identity_and_images_are_unit():
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(toy.random_mlp(6, 0)(x), x)
    net = toy.random_mlp(6, 2, seed=1)
    assert not np.allclose(net(x), x)
    src = toy.SparseSource(10, 6, 0.1)
    np.testing.assert_allclose(toy.feature_images(src, toy.random_mlp(6, 0)), src.directions(), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(toy.feature_images(src, net), axis=1), 1.0, rtol=1e-5)


def test_recovery_is_one_for_a_decoder_holding_the_features():
    src = toy.SparseSource(12, 6, 0.1)
    sae = TopKSAE(6, 12, 2, seed=0)
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(src.directions()[::-1].copy()))  # same rows, another order
    assert toy.recovery(sae, src.directions()) == pytest.approx(1.0, abs=1e-6)


def test_gaussian_matched_has_the_covariance():
    x = toy.random_mlp(4, 2, seed=0)(np.random.default_rng(1).normal(size=(20000, 4)).astype(np.float32))
    g = toy.gaussian_matched(x, 20000)
    np.testing.assert_allclose(np.cov(g, rowvar=False), np.cov(x, rowvar=False), atol=0.1)


def test_hypothesis1_recovers_very_sparse_features():
    torch.set_num_threads(1)
    res = toy.hypothesis1(toy.SparseSource(32, 16, 0.03), 0, k=1, n_steps=120, batch_size=256)
    assert res["recovery"] > 0.8 and 0 < res["fvu"] < 1


def test_k_for_is_the_expected_number_of_active_features():
    from saesanity.toy import k_for

    assert (k_for(256, 0.05), k_for(256, 0.01), k_for(64, 0.001)) == (13, 3, 1)
