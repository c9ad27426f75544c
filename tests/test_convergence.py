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


def test_a_family_without_seed_pairs_is_checked_on_fvu_alone_and_says_so():
    rec = convergence.check(_pts([0.40, 0.35, 0.345], [None, None, None]))
    assert rec["checks"] == ["fvu"] and rec["shared_change"] is None
    assert rec["converged"] is True  # (0.345 - 0.35) / 0.35 = -1.4%
    assert convergence.check(_pts([0.40, 0.35, 0.34], [None] * 3))["converged"] is False  # -2.9%
    line = convergence.describe(rec)
    assert line.startswith("**Converged** in FVU over the last doubling of training tokens: held-out FVU -1.4% "
                           "(limit ±2%); the shared fraction is not checked (one seed per SAE).")
    assert "500,000: FVU 0.350 → 1,000,000: FVU 0.345." in line
    assert convergence.check(_pts([0.4, 0.3], [0.1, 0.2]))["checks"] == ["fvu", "shared"]
    with pytest.raises(ValueError, match="every point has a shared fraction or none"):
        convergence.check(_pts([0.4, 0.3], [0.1, None]))


def test_a_family_is_converged_when_every_checked_member_is_and_names_its_largest_changes():
    ok = convergence.check(_pts([0.40, 0.35, 0.347], [0.30, 0.40, 0.41]))  # -0.9%, +1 point
    bad = convergence.check(_pts([0.40, 0.35, 0.33], [0.10, 0.20, 0.25]))  # -5.7%, +5 points
    unchecked = convergence.check(_pts([0.4], [0.1]))
    fam = convergence.family({"d_sae=1152": ok, "d_sae=4608": bad, "k=64": unchecked})
    assert (fam["n_members"], fam["n_checked"], fam["n_converged"], fam["converged"]) == (3, 2, 1, False)
    assert fam["largest_fvu_rel_change_at"] == "d_sae=4608"
    assert fam["largest_fvu_rel_change"] == pytest.approx((0.33 - 0.35) / 0.35)
    assert fam["largest_shared_change"] == pytest.approx(0.05)
    assert convergence.family({"a": ok, "b": unchecked})["converged"] is True
    assert convergence.family({"b": unchecked})["converged"] is None
    line = convergence.describe(fam)
    assert line.startswith("**Not converged**: 1 of 2 configurations meet the check over the last doubling of "
                           "training tokens; largest held-out FVU change -5.7% (d_sae=4608, limit ±2%), largest "
                           "shared-fraction change +5.0 points (d_sae=4608, limit ±3).")
    fvu_only = convergence.family({"trained/resid_post.1": convergence.check(_pts([0.4, 0.35], [None, None]))})
    assert fvu_only["largest_shared_change"] is None
    assert "shared fraction is not checked (one seed per SAE)" in convergence.describe(fvu_only)


def test_scale_lines_state_training_tokens_and_the_epochs_behind_them():
    from types import SimpleNamespace

    from saesanity import plotting

    assert plotting.train_tokens(SimpleNamespace(n_tokens=4_000_000, epochs=2)) == "8M tokens (2 epochs over 4M rows)"
    assert plotting.train_tokens(SimpleNamespace(n_tokens=150_000, epochs=1), "training tokens") == "150K training tokens"
    assert plotting.train_tokens(SimpleNamespace(n_tokens=1_000_000)) == "1M tokens"
