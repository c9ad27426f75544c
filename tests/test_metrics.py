import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score

from saesanity.metrics import fvu, l0


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


def test_fvu_differs_from_variance_around_zero_on_large_mean():
    """SAELens<6 / SAEBench 'explained variance' divides by Σ‖x‖²; with a large mean it flatters."""
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(100.0, 1.0, size=(500, 4)))
    x_hat = torch.full_like(x, 100.0)  # predicts only the mean
    around_zero = 1 - (x - x_hat).pow(2).sum() / x.pow(2).sum()
    assert fvu(x, x_hat).item() == pytest.approx(1.0, abs=0.02)  # explains nothing
    assert around_zero.item() > 0.999  # looks perfect


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
