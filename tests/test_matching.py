import itertools

import numpy as np
import pytest
import torch

from saesanity.matching import Match, MatchingError, SharedRule, hungarian, match, shared, standard_rules, summarize
from saesanity.sae import TopKSAE


def _shuffled_copy(sae, perm):
    other = TopKSAE(sae.d_in, sae.d_sae, sae.k)
    with torch.no_grad():
        other.W_enc.copy_(sae.W_enc[:, perm])
        other.b_enc.copy_(sae.b_enc[perm])
        other.W_dec.copy_(sae.W_dec[perm])
        other.b_dec.copy_(sae.b_dec)
    return other


def test_shuffled_copy_recovers_permutation_and_all_shared():
    sae = TopKSAE(16, 48, 4, seed=3)
    perm = np.random.default_rng(0).permutation(48)
    m = match(sae, _shuffled_copy(sae, perm))
    inverse = np.argsort(perm)  # latent i of A sits at position inverse[i] of B
    assert np.array_equal(m.dec_partner, inverse) and np.array_equal(m.enc_partner, inverse)
    np.testing.assert_allclose(m.dec_cos, 1.0, atol=1e-5)
    for rule in standard_rules(0.7).values():
        assert shared(m, rule).mean() == 1.0
    assert summarize(m)["shared_frac_paper"] == 1.0


def test_hungarian_matches_brute_force():
    rng = np.random.default_rng(1)
    C = rng.normal(size=(6, 6))
    best = max(itertools.permutations(range(6)), key=lambda p: sum(C[i, p[i]] for i in range(6)))
    assert list(hungarian(C)) == list(best)


def _hand_match():
    return Match(dec_partner=np.array([0, 1, 2, 3]), enc_partner=np.array([0, 2, 1, 3]),
                 dec_cos=np.array([0.9, 0.95, 0.7, 0.8]), enc_cos=np.array([0.8, 0.9, 0.9, 0.6]),
                 dec_max=np.array([0.9, 0.95, 0.75, 0.8]), enc_max=np.array([0.8, 0.9, 0.9, 0.75]))


def test_rules_on_hand_built_match():
    m = _hand_match()
    assert shared(m, SharedRule(0.7)).tolist() == [True, False, False, False]
    assert shared(m, SharedRule(0.7, require_agreement=False)).tolist() == [True, True, False, False]
    assert shared(m, SharedRule(0.7, strict=False, require_agreement=False)).tolist() == [True, True, True, False]
    assert shared(m, SharedRule(0.7, require_agreement=False, decoder_only=True)).tolist() == [True, True, False, True]
    assert shared(m, SharedRule(0.7, require_agreement=False, method="max")).tolist() == [True, True, True, True]


def test_different_d_model_rejected():
    with pytest.raises(MatchingError, match="different d_model: 16 vs 8"):
        match(TopKSAE(16, 32, 4, seed=0), TopKSAE(8, 32, 4, seed=0))


def test_max_with_agreement_rejected():
    with pytest.raises(MatchingError, match="require_agreement"):
        SharedRule(method="max", require_agreement=True)
