"""Exact sparse assignment: same matching as dense scipy, and a certificate that rejects a wrong one."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from saesanity.assignment import (AssignmentError, certify, check_certificate, sparse_assignment, structured_pair,
                                  top_candidates)
from saesanity.matching import MatchingError, match_pair
from saesanity.sae import TopKSAE


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def _scipy(A, B):
    C = (A @ B.t()).double().numpy()
    return linear_sum_assignment(C, maximize=True)[1], C


@pytest.mark.parametrize("n,d,seed", [(1, 4, 0), (2, 4, 1), (5, 3, 2), (64, 8, 3), (300, 32, 4), (700, 16, 5)])
def test_random_pairs_match_scipy(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    A, B = _unit(torch.randn(n, d, generator=g)), _unit(torch.randn(n, d, generator=g))
    a = sparse_assignment(A, B)
    ref, C = _scipy(A, B)
    assert a.certificate.certified
    assert np.array_equal(a.partner, ref)
    np.testing.assert_allclose(a.total, C[np.arange(n), ref].sum(), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(a.row_max, C.max(1), atol=1e-6)
    np.testing.assert_allclose(a.col_max, C.max(0), atol=1e-6)
    assert check_certificate(A, B, a.partner, a.u, a.v) <= 1e-6  # dense audit of the duals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_structured_pairs_match_scipy_where_top1_fails(seed):
    """Unshared rows that mix shared directions: a row's nearest neighbour is often taken."""
    A, B = structured_pair(3000, 64, seed=seed)
    a = sparse_assignment(A, B)
    ref, C = _scipy(A, B)
    assert np.array_equal(a.partner, ref) and a.certificate.certified
    assert (C.argmax(1) != ref).mean() > 0.1  # plain top-1 would be wrong for many rows
    assert a.certificate.rounds >= 1 and a.certificate.n_edges < 3000 * 3000 / 20


def test_small_candidate_lists_still_exact():
    """With one candidate per row the first graph misses most optimal pairs; the rounds add them."""
    A, B = structured_pair(1500, 32, seed=7)
    a = sparse_assignment(A, B, R=1, R_bound=2, delta=0.0)
    assert np.array_equal(a.partner, _scipy(A, B)[0])
    assert a.certificate.rounds > 1 and a.certificate.pairs_computed > 0


def test_certificate_rejects_non_optimal_matchings():
    A, B = structured_pair(1200, 32, seed=3)
    a = sparse_assignment(A, B)
    assert certify(A, B, a.partner).certified
    rng = np.random.default_rng(0)
    for k in (2, 3, 10):  # rotate the partners of k rows: strictly worse (no ties in random data)
        p = a.partner.copy()
        idx = rng.choice(1200, k, replace=False)
        p[idx] = p[np.roll(idx, 1)]
        c = certify(A, B, p)
        assert not c.certified and c.max_violation > c.tol
    with pytest.raises(AssignmentError, match="permutation"):
        certify(A, B, np.zeros(1200, dtype=np.int64))


def test_tied_duplicates_reach_the_optimal_total():
    A = _unit(torch.randn(40, 8, generator=torch.Generator().manual_seed(0)))
    A = torch.cat([A, A])
    B = A[torch.randperm(80, generator=torch.Generator().manual_seed(1))]
    a = sparse_assignment(A, B)
    assert a.certificate.certified and a.total == pytest.approx(80.0, abs=1e-4)


def test_candidates_equal_dense_topk_across_blocks():
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(900, 16, generator=g), torch.randn(700, 16, generator=g)
    c = top_candidates(A, B, 6, block_bytes=4 * 700 * 50)  # 18 blocks: the column merge runs several times
    S = A @ B.t()
    np.testing.assert_allclose(c.col_val, S.topk(6, dim=0).values.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(c.col_idx, S.topk(6, dim=0).indices.numpy())
    np.testing.assert_array_equal(c.row_idx, S.topk(6, dim=1).indices.numpy())


def test_bad_input():
    with pytest.raises(AssignmentError, match="one shape"):
        sparse_assignment(torch.randn(5, 4), torch.randn(6, 4))


def test_match_pair_methods_agree_on_sae_pairs():
    a, b = TopKSAE(24, 400, 4, seed=1), TopKSAE(24, 400, 4, seed=2)
    sp_ab, sp_ba = match_pair(a, b, method="sparse")
    sc_ab, sc_ba = match_pair(a, b, method="scipy")
    for x, y in ((sp_ab, sc_ab), (sp_ba, sc_ba)):
        for f in ("dec_partner", "enc_partner"):
            assert np.array_equal(getattr(x, f), getattr(y, f))
        for f in ("dec_cos", "enc_cos", "dec_max", "enc_max"):
            np.testing.assert_allclose(getattr(x, f), getattr(y, f), atol=1e-6)


def test_match_pair_parallel_equals_serial():
    a, b = TopKSAE(16, 300, 4, seed=3), TopKSAE(16, 300, 4, seed=4)
    par, ser = match_pair(a, b, parallel=True)[0], match_pair(a, b, parallel=False)[0]
    assert np.array_equal(par.enc_partner, ser.enc_partner) and np.array_equal(par.dec_partner, ser.dec_partner)


def test_sparse_method_needs_one_size_and_scipy_handles_rectangles():
    a, b = TopKSAE(16, 40, 4, seed=1), TopKSAE(16, 60, 4, seed=2)
    with pytest.raises(MatchingError, match="one size"):
        match_pair(a, b, method="sparse")
    ab, ba = match_pair(a, b)  # auto: dense scipy for different sizes
    assert (ab.dec_partner >= 0).all() and (ba.dec_partner >= 0).sum() == 40
    with pytest.raises(MatchingError, match="valid"):
        match_pair(a, a, method="lap")
