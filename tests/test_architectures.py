"""Every architecture: recovers planted sparse features, and round-trips through SAELens."""

import numpy as np
from helpers import planted
import pytest
import torch

from saesanity.sae import ARCHITECTURES, TrainConfig, load_sae, save_saelens, train_sae

SETTINGS = {  # per-architecture knobs for the planted-feature problem (lr, sparsity coefficient)
    "topk": dict(lr=1e-2),
    "batchtopk": dict(lr=1e-2),
    "relu": dict(lr=5e-3, l1_coefficient=0.3),
    "gated": dict(lr=5e-3, l1_coefficient=1.0),
    "jumprelu": dict(lr=1e-2, l0_coefficient=3e-2, jumprelu_init_threshold=1.0, jumprelu_bandwidth=1.0),
    # an inner width below the 48 planted features merges some of them (mean max cosine 0.88 at widths 8, 24)
    "matryoshka": dict(lr=1e-2, matryoshka_widths=(48,)),
}


@pytest.fixture(scope="module")
def trained():
    acts, feats = planted(d=32, n_feat=48)
    acts6 = np.concatenate([acts] * 6)
    out = {}
    for arch, kw in SETTINGS.items():
        cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=acts6.shape[0], architecture=arch,
                          dead_tokens=2048, log_every=20, **kw)
        out[arch] = train_sae(acts6, cfg, progress=False)
    return out, feats, acts


@pytest.mark.parametrize("arch", list(SETTINGS))
def test_recovers_planted_features(trained, arch):
    saes, feats, acts = trained
    sae, log = saes[arch]
    cos = torch.from_numpy(feats).float() @ sae.W_dec.t().detach()
    assert cos.max(1).values.mean() > 0.9, f"{arch}: mean max cosine {cos.max(1).values.mean():.3f}"
    with torch.no_grad():
        x = torch.from_numpy(acts[:2000])
        z = sae.encode(x)
        from saesanity.metrics import fvu
        assert fvu(x, sae.decode(z)) < 0.3
        assert 1 <= (z != 0).sum(1).float().mean() <= 12  # sparse


@pytest.mark.parametrize("arch", list(SETTINGS))
def test_saelens_roundtrip(trained, arch, tmp_path):
    from sae_lens import SAE

    sae, _ = trained[0][arch]
    save_saelens(sae, tmp_path, {"hook_name": "x"})
    theirs = SAE.load_from_disk(str(tmp_path))
    ours = load_sae(tmp_path)
    x = torch.from_numpy(trained[2][:300])
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours(x), sae(x), rtol=1e-5, atol=1e-5)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="architecture 'sparse-magic'"):
        train_sae(np.zeros((512, 4), np.float32), TrainConfig(d_sae=8, k=2, batch_size=256, n_tokens=512,
                                                             architecture="sparse-magic"), progress=False)


def test_cache_key_ignores_other_architectures_knobs():
    a = TrainConfig(d_sae=8, k=2, l1_coefficient=1.0)
    b = TrainConfig(d_sae=8, k=2, l1_coefficient=5.0)
    assert a.key() == b.key() and "l1_coefficient" not in a.key()
    r1, r2 = (TrainConfig(d_sae=8, k=k, architecture="relu") for k in (2, 3))
    assert r1.key() == r2.key() and "l1_coefficient" in r1.key()
    assert set(ARCHITECTURES) == set(SETTINGS)


def test_matryoshka_loss_is_the_sum_of_its_prefixes_fvus_by_hand():
    from saesanity.metrics import fvu
    from saesanity.sae import MatryoshkaBatchTopKSAE

    sae = MatryoshkaBatchTopKSAE(4, 6, 2, widths=(2, 4), seed=0)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    cfg = TrainConfig(d_sae=6, k=2, auxk_alpha=0.0, architecture="matryoshka", matryoshka_widths=(2, 4))
    out = sae.training_step(x, torch.zeros(6, dtype=torch.bool), cfg)
    z = torch.relu(sae.pre_acts(x)).flatten()
    keep = torch.zeros_like(z).scatter(0, z.topk(16).indices, 1.0)
    z = (z * keep).view(8, 6)  # the batch's 2 x 8 largest
    want = sum(fvu(x, z[:, :m] @ sae.W_dec[:m] + sae.b_dec) for m in (2, 4, 6))
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.fvu, fvu(x, z @ sae.W_dec + sae.b_dec))


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("arch", ["matryoshka", "batchtopk"])
def test_batch_topk_sparse_step_has_the_dense_losses_gradients(autocast, arch):
    """The sparse step (exact values at the batch's selection, per-level embedding bags) against dense autograd of
    `reconstruction_loss` on the same selection; under bf16 autocast the selection is the bf16 product's and the
    values stay exact, so the dense reference is the fp32 one on that selection (the weight gradients' bags are bf16
    under autocast, as TopK's)."""
    from saesanity.sae.select import batch_topk_csr
    from saesanity.sae.train import make_sae

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 16, generator=g) + 0.3
    cfg = TrainConfig(d_sae=96, k=4, auxk_alpha=0.0, architecture=arch,
                      matryoshka_widths=(8, 40) if arch == "matryoshka" else ())
    sparse, dense = (make_sae(cfg, 16) for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = sparse.training_step(x, torch.zeros(96, dtype=torch.bool), cfg)
        pre_low = sparse._dense_preacts(x).clone()
    out.loss.backward()
    crow, col, _ = batch_topk_csr(pre_low, 4 * 64)
    rows = torch.arange(64).repeat_interleave(crow.diff())
    pre = dense.pre_acts(x)
    z = torch.zeros_like(pre).index_put((rows, col), torch.relu(pre[rows, col]))
    loss, rec, _ = dense.reconstruction_loss(x, z)
    loss.backward()
    torch.testing.assert_close(out.loss, loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.fvu, rec, rtol=1e-5, atol=1e-6)
    assert out.l0 == pytest.approx(float((z > 0).sum()) / 64)
    for (name, a), b in zip(sparse.named_parameters(), dense.parameters()):
        if autocast and name in ("W_enc", "W_dec"):  # their per-latent bags run in bf16 (topk.py): bf16-close
            assert float((a.grad - b.grad).norm() / b.grad.norm()) < 1e-2, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_batch_selection_keeps_the_n_largest_positive_and_ties_whole():
    from saesanity.sae.select import batch_topk_csr

    pre = torch.tensor([[3.0, -1.0, 2.0, 0.0], [2.0, 5.0, 2.0, 1.0]])
    crow, col, t = batch_topk_csr(pre, 3)  # 5, 3, then 2 three times: all three 2s kept
    assert crow.tolist() == [0, 2, 5] and col.tolist() == [0, 2, 0, 1, 2] and t == 2.0
    crow, col, t = batch_topk_csr(pre, 10)  # only 6 positive: all of them, t the smallest
    assert crow.tolist() == [0, 2, 6] and col.tolist() == [0, 2, 0, 1, 2, 3] and t == 1.0
    big = torch.randn(256, 4608, generator=torch.Generator().manual_seed(0)).bfloat16()  # the vector path
    crow, col, t = batch_topk_csr(big, 256 * 32)
    flat = big.float().flatten()
    assert t == float(flat.topk(256 * 32).values.min())
    keep = big.float() >= t
    assert torch.equal(col, keep.nonzero()[:, 1]) and torch.equal(crow[1:], keep.sum(1).cumsum(0))
    with pytest.raises(ValueError, match="NaN"):
        batch_topk_csr(torch.tensor([[1.0, float("nan")]]), 1)


def test_matryoshka_prefixes_reconstruct_on_their_own(trained):
    """The design property: the first 8 latents of the Matryoshka SAE reconstruct far better than the first 8 of a
    BatchTopK SAE trained the same way (which order their latents arbitrarily)."""
    from saesanity.metrics import fvu

    saes, _, acts = trained
    acts6 = np.concatenate([acts] * 6)
    nested, _ = train_sae(acts6, TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=acts6.shape[0], dead_tokens=2048,
                                             architecture="matryoshka", matryoshka_widths=(8, 24), lr=1e-2),
                          progress=False)
    x = torch.from_numpy(acts[:2000])
    with torch.no_grad():
        def prefix_fvu(sae, m):
            z = sae.encode(x)
            return float(fvu(x, z[:, :m] @ sae.W_dec[:m] + sae.b_dec))

        assert prefix_fvu(nested, 8) < prefix_fvu(saes["batchtopk"][0], 8) - 0.1


@pytest.mark.parametrize("widths", [(), (8, 8), (16, 8), (0, 8), (64,)])
def test_matryoshka_widths_must_nest(widths):
    with pytest.raises(ValueError, match="matryoshka widths"):
        train_sae(np.zeros((512, 4), np.float32), TrainConfig(d_sae=64, k=2, batch_size=256, n_tokens=512,
                                                             architecture="matryoshka", matryoshka_widths=widths),
                  progress=False)
    assert "matryoshka_widths" not in TrainConfig(d_sae=8, k=2).key()
    assert TrainConfig(d_sae=64, k=2, architecture="matryoshka", matryoshka_widths=(8,)).key()["matryoshka_widths"] == (8,)


def test_batch_topk_keys_name_the_sparse_step():
    """SAEs of the sparse BatchTopK / Matryoshka step are cached apart from those of the dense step of before."""
    key = lambda arch, **kw: TrainConfig(d_sae=16, k=2, architecture=arch, **kw).key()  # noqa: E731
    assert key("batchtopk")["step"] == "sparse" and key("matryoshka", matryoshka_widths=(8,))["step"] == "sparse"
    assert "step" not in key("topk") and "step" not in key("relu")
