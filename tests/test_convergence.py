import pytest

from saesanity import convergence


def _pts(fvus, shareds, n0=250_000):
    return [{"n_tokens": n0 * 2**i, "fvu": f, "shared": s} for i, (f, s) in enumerate(zip(fvus, shareds))]


def test_converged_needs_both_fvu_and_sharing_flat_over_the_last_doubling():
    flat = convergence.check(_pts([0.40, 0.35, 0.347], [0.30, 0.40, 0.41]))
    assert flat["converged"] is True
    assert flat["fvu_rel_change"] == pytest.approx((0.347 - 0.35) / 0.35)
    assert flat["shared_change"] == pytest.approx(0.01)
    # the embedded default's pattern: FVU flattening (−3%) while sharing climbs 3.9 points
    assert convergence.check(_pts([0.33, 0.31, 0.30], [0.020, 0.058, 0.097]))["converged"] is False
    # sharing flat, FVU still falling 5%
    assert convergence.check(_pts([0.40, 0.38, 0.361], [0.40, 0.41, 0.41]))["converged"] is False


def test_one_point_is_not_checked_and_the_last_two_must_be_a_doubling():
    one = convergence.check(_pts([0.4], [0.1]))
    assert one["converged"] is None and "fewer than two" in convergence.describe(one)
    with pytest.raises(ValueError, match="must be a doubling, got 250000 and 750000"):
        convergence.check([{"n_tokens": 250_000, "fvu": 0.4, "shared": 0.1},
                           {"n_tokens": 750_000, "fvu": 0.3, "shared": 0.2}])


def test_the_line_a_reader_sees_states_verdict_changes_and_trend():
    line = convergence.describe(convergence.check(_pts([0.33, 0.31, 0.30], [0.020, 0.058, 0.097])))
    assert line.startswith("**Not converged** over the last doubling of training tokens: held-out FVU -3.2% "
                           "(limit ±2%), shared fraction +3.9 points (limit ±3).")
    assert "250,000: FVU 0.330, 2.0% shared → 500,000" in line
