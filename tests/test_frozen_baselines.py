"""TrainConfig.freeze: the random-weight baselines of Korznikov et al. (2026) in our trainer — a frozen random
decoder, a soft-frozen decoder (cos >= 0.8 to its initialisation) and a frozen encoder."""

import dataclasses

import pytest
import torch

from helpers import planted
from saesanity.metrics import fvu
from saesanity.sae.train import TrainConfig, make_sae, train_sae

MIN_COS = 0.95
CFG = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=8192 * 2, lr=3e-3, seed=1, log_every=8, dead_tokens=2048)


@pytest.fixture(scope="module")
def runs():
    acts, _ = planted(n=8192, d=16)
    # this short run moves no decoder row below cos 0.88 from its start (mean 0.94), so the cone is 0.95 here
    out = {f: train_sae(acts, dataclasses.replace(CFG, freeze=f, freeze_min_cos=MIN_COS), progress=False)[0]
           for f in ("none", "decoder", "soft_decoder", "encoder")}
    x = torch.from_numpy(acts[:2048])
    with torch.no_grad():
        return out, {f: float(fvu(x, sae(x))) for f, sae in out.items()}, make_sae(CFG, 16)


def test_a_frozen_weight_stays_at_its_initialisation_and_the_others_train(runs):
    saes, _, init = runs
    torch.testing.assert_close(saes["decoder"].W_dec, init.W_dec, rtol=0, atol=1e-6)
    assert not torch.allclose(saes["decoder"].W_enc, init.W_enc)
    torch.testing.assert_close(saes["encoder"].W_enc, init.W_enc, rtol=0, atol=0)
    assert not torch.allclose(saes["encoder"].W_dec, init.W_dec, atol=1e-3)


def test_the_soft_frozen_decoder_keeps_each_row_within_its_cone_and_uses_it(runs):
    saes, _, init = runs
    cos = torch.linalg.vecdot(saes["soft_decoder"].W_dec, init.W_dec)
    assert cos.min() >= MIN_COS - 1e-5  # every row inside the cone ...
    assert (cos < MIN_COS + 1e-4).float().mean() > 0.2  # ... and many pressed against its edge
    free = torch.linalg.vecdot(saes["none"].W_dec, init.W_dec)
    assert (free < MIN_COS).float().mean() > 0.2  # unconstrained training leaves the cone: the constraint binds
    torch.testing.assert_close(torch.linalg.vector_norm(saes["soft_decoder"].W_dec, dim=1), torch.ones(64))


def test_random_weights_reconstruct_worse_than_trained_ones(runs):
    _, f, _ = runs
    assert f["none"] < f["soft_decoder"] < f["decoder"]
    assert f["none"] < f["encoder"]


def test_freeze_is_in_the_cache_key_only_when_on():
    assert "freeze" not in CFG.key() and "freeze_min_cos" not in CFG.key()
    assert dataclasses.replace(CFG, freeze="decoder").key()["freeze"] == "decoder"
    assert "freeze_min_cos" not in dataclasses.replace(CFG, freeze="decoder").key()
    assert dataclasses.replace(CFG, freeze="soft_decoder", freeze_min_cos=0.9).key()["freeze_min_cos"] == 0.9
    with pytest.raises(ValueError, match="freeze='dec'; valid"):
        dataclasses.replace(CFG, freeze="dec")
    with pytest.raises(ValueError, match=r"freeze_min_cos=1.5: must lie in \(0, 1\)"):
        dataclasses.replace(CFG, freeze_min_cos=1.5)
