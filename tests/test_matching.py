import itertools

import numpy as np
import pytest
import torch

from saesanity.matching import (Match, MatchingError, SharedRule, exactly_m_of_n, found_in, hungarian, match, match_pair,
                                masks_from_pairs, only_in_base_curve, pair_shared_spread, pairwise_shared, shared, standard_rules,
                                summarize)
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


def test_match_pair_reverse_is_consistent():
    a, b = TopKSAE(16, 40, 4, seed=1), TopKSAE(16, 40, 4, seed=2)
    ab, ba = match_pair(a, b)
    direct = match(b, a)
    assert np.array_equal(ab.dec_partner[ba.dec_partner], np.arange(40))
    np.testing.assert_allclose(ba.dec_max, direct.dec_max, rtol=1e-6)
    np.testing.assert_allclose(np.sort(ba.dec_cos), np.sort(ab.dec_cos), rtol=1e-6)


def _hand_masks():
    """3 SAEs x 4 latents; base 0's latent 0 is everywhere, latent 1 in SAE 1 only, 2 and 3 nowhere."""
    m = np.ones((3, 3, 4), dtype=bool)
    m[0, 1] = [True, True, False, False]
    m[0, 2] = [True, False, False, False]
    m[1, 0] = m[1, 2] = m[2, 0] = m[2, 1] = [True, True, True, False]
    return m


def test_found_in_and_exactly_m_of_n():
    m = _hand_masks()
    assert found_in(m, 0).tolist() == [3, 2, 1, 1]
    assert found_in(m, 0, [0, 2]).tolist() == [2, 1, 1, 1]
    np.testing.assert_allclose(exactly_m_of_n(m, 0), [0.5, 0.25, 0.25])


def test_only_in_base_curve_by_enumeration():
    curve = only_in_base_curve(_hand_masks())
    # N=2: pairs (0,1),(0,2),(1,2) with each base: base0 vs1 -> 2/4, base0 vs2 -> 3/4; base1/2 vs others -> 1/4
    vals = sorted([0.5, 0.75, 0.25, 0.25, 0.25, 0.25])
    assert curve[2]["n_draws"] == 6 and sorted(curve[2]["values"]) == pytest.approx(vals)
    assert curve[3]["mean"] == pytest.approx(np.mean([0.5, 0.25, 0.25]))


def test_pairwise_shared_on_shuffled_copies():
    base = TopKSAE(16, 32, 4, seed=0)
    copies = [base] + [_shuffled_copy(base, np.random.default_rng(s).permutation(32)) for s in (1, 2)]
    masks = pairwise_shared(copies)
    assert masks.all()
    assert only_in_base_curve(masks)[3]["mean"] == 0.0


def test_masks_from_pairs_equals_pairwise_shared():
    saes = [TopKSAE(8, 24, 3, seed=s) for s in range(3)]
    pairs = {}
    for i in range(3):
        for j in range(i + 1, 3):
            pairs[i, j], pairs[j, i] = match_pair(saes[i], saes[j])
    rule = SharedRule(0.3, require_agreement=False)
    np.testing.assert_array_equal(masks_from_pairs(pairs, 3, rule), pairwise_shared(saes, rule))


def test_pair_shared_spread_by_hand():
    """Each unordered pair's shared fraction is the mean of the lower seed's mask; sd has ddof 1; fewer than 3
    SAEs (one pair) is refused."""
    masks = np.ones((3, 3, 4), dtype=bool)
    masks[0, 1] = [1, 0, 0, 0]  # 0.25
    masks[0, 2] = [1, 1, 0, 0]  # 0.5
    masks[1, 2] = [1, 1, 1, 0]  # 0.75
    masks[1, 0] = masks[2, 0] = masks[2, 1] = False  # the upper triangle is read, not these
    got = pair_shared_spread(masks)
    assert got["pairs"] == ["0-1", "0-2", "1-2"] and got["values"] == [0.25, 0.5, 0.75]
    assert got["mean"] == 0.5 and got["spread_sd"] == pytest.approx(0.25)  # sqrt(((-.25)^2 + 0 + .25^2) / 2)
    assert got["sd"] == pytest.approx(0.25 * 2**0.5)  # 3 seeds' pairs: κ = 1 of m = 2 members (shared_effects_spread)
    with pytest.raises(MatchingError, match="n >= 3"):
        pair_shared_spread(masks[:2, :2])
