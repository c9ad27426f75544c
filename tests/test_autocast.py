"""bf16 autocast training (`TrainConfig.autocast`): it runs on the CPU, is not the fp32 result bit for bit but
lands close to it, keeps parameters fp32, and is in the cache key only when on."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import planted
from saesanity.cache import key_of
from saesanity.metrics import fvu
from saesanity.sae import TopKSAE, TrainConfig, train_sae

SETTINGS = {  # the planted-feature settings of tests/test_architectures.py
    "topk": dict(lr=1e-2),
    "batchtopk": dict(lr=1e-2),
    "relu": dict(lr=5e-3, l1_coefficient=0.3),
    "gated": dict(lr=5e-3, l1_coefficient=1.0),
}


@pytest.fixture(scope="module")
def data():
    acts, _ = planted(d=32, n_feat=48)
    return np.concatenate([acts] * 8), acts[:4096]


@pytest.mark.parametrize("arch", list(SETTINGS))
def test_bf16_autocast_trains_close_to_fp32(data, arch):
    acts, held = data
    cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=acts.shape[0], architecture=arch, dead_tokens=2048,
                      log_every=16, **SETTINGS[arch])
    fp32, _ = train_sae(acts, cfg, progress=False)
    bf16, log = train_sae(acts, dataclasses.replace(cfg, autocast="bf16"), progress=False)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())  # parameters (and so Adam state) stay fp32
    assert not torch.equal(fp32.W_dec, bf16.W_dec)  # autocast did change the arithmetic
    x = torch.from_numpy(held)
    with torch.no_grad():
        f32, f16 = (float(fvu(x, s.decode(s.encode(x)))) for s in (fp32, bf16))
    assert f32 < 0.3, f"{arch}: the fp32 run did not learn the planted features (FVU {f32:.3f})"
    assert abs(f16 - f32) < 0.03 * f32, f"{arch}: held-out FVU fp32 {f32:.4f}, bf16 autocast {f16:.4f}"
    assert all(np.isfinite(r["fvu"]) for r in log)


def test_topk_sparse_backward_follows_the_forward_precision():
    """The custom backwards of the TopK sparse path take their precision from the forward (`ctx.low`), not from
    whether backward() is called inside an autocast block: the same fp32 gradients bit for bit either way."""
    torch.manual_seed(0)
    x = torch.randn(64, 16) + 0.5
    grads = []
    for inside in (False, True):
        sae = TopKSAE(16, 48, 4, seed=3)
        no_dead = torch.zeros(48, dtype=torch.bool)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = sae.training_step(x, no_dead, TrainConfig(d_sae=48, k=4))
            assert out.loss.dtype == torch.float32 and out.fvu.dtype == torch.float32
            if inside:
                out.loss.backward()
        if not inside:
            out.loss.backward()
        grads.append({n: p.grad.clone() for n, p in sae.named_parameters()})
    for name, g in grads[0].items():
        assert g.dtype == torch.float32 and torch.equal(g, grads[1][name]), name


def test_topk_under_autocast_selects_in_bf16_keeps_values_exact_and_bags_close():
    """Under bf16 autocast the K chosen values are the fp32 pre-activations at the chosen latents (recomputed,
    not the bf16-rounded product); the backward's per-latent bags in bf16 are close to, not equal to, fp32's."""
    torch.manual_seed(0)
    x = torch.randn(256, 32) + 0.3
    sae = TopKSAE(32, 200, 6, seed=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        vals, sel, pre = sae.encode_sparse(x)
    assert pre.dtype == torch.bfloat16 and vals.dtype == torch.float32
    exact = ((x - sae.b_dec) @ sae.W_enc + sae.b_enc).gather(1, sel.idx).relu()
    torch.testing.assert_close(vals, exact, rtol=1e-5, atol=1e-6)
    assert not torch.equal(vals, pre.float().gather(1, sel.idx).relu())  # not the rounded product
    # the backward's per-latent bags in bf16: within bf16 rounding of the fp32 sums, returned as fp32
    src, w = torch.randn(256, 32), torch.rand(256, 6)
    f32, b16 = sel.per_latent_sum(src, w), sel.per_latent_sum(src, w, torch.bfloat16)
    assert b16.dtype == torch.float32 and not torch.equal(f32, b16)
    assert (f32 - b16).norm() / f32.norm() < 1e-2


# cache keys of default-config SAEs as they were before `autocast` existed (commit 712f1e4): unchanged keys
# mean every SAE cached (and every figure made) before finds its artifact again
KEYS_BEFORE_AUTOCAST = {"topk": "649df2d4dd18a4eb3773", "batchtopk": "d731dba73708a9cabe32",
                        "relu": "758bfd00c51d7aa3d7fd", "gated": "48a2ad71f557136ecaed",
                        "jumprelu": "62c1fe073496a8e573ab"}


@pytest.mark.parametrize("arch", list(KEYS_BEFORE_AUTOCAST))
def test_autocast_is_in_the_key_only_when_on(arch):
    off = TrainConfig(d_sae=64, k=4, architecture=arch)
    assert "autocast" not in off.key()
    # BatchTopK moved to the sparse step on purpose (its key names it, step: sparse); without that field it
    # is the key from before, so the change of key is that one field and nothing else
    before = {k: v for k, v in off.key().items() if not (arch == "batchtopk" and k == "step")}
    assert ("step" in off.key()) == (arch == "batchtopk")
    assert key_of("sae", {"acts": "golden", "cfg": before}, 1) == KEYS_BEFORE_AUTOCAST[arch]
    on = dataclasses.replace(off, autocast="bf16")
    # bf16 TopK SAEs also name the tie rule of their selection (it changed; bf16 pre-activations tie often)
    tie_rule = {"selection": "cyclic_ties"} if arch == "topk" else {}
    assert on.key() == {**off.key(), "autocast": "bf16", **tie_rule}


def test_bad_autocast_value():
    with pytest.raises(ValueError, match=r"autocast='fp16'; valid: \['none', 'bf16'\]"):
        TrainConfig(d_sae=64, k=4, autocast="fp16")


def test_profiles_set_autocast_through_sae_autocast():
    """`runs.train_cfg` reads the profile's `sae_autocast` (and Heap's per-variant view passes it on); "none" is
    the unchanged key; a bad value is refused at load."""
    from saesanity import baselines, params, runs

    P = params.load("paulo_fig1_matched_cosines", "smoke")
    assert P.sae_autocast == "none" and runs.train_cfg(P, 0).autocast == "none"
    on = params.load("paulo_fig1_matched_cosines", "smoke", sae_autocast="bf16")
    assert runs.train_cfg(on, 0) == dataclasses.replace(runs.train_cfg(P, 0), autocast="bf16")
    H = params.load("heap_metrics_vs_layer", "smoke")
    H_on = params.load("heap_metrics_vs_layer", "smoke", sae_autocast="bf16")
    assert runs.train_cfg(baselines.view(H, "trained"), H.seed).autocast == "none"
    assert runs.train_cfg(baselines.view(H_on, "trained"), H.seed).autocast == "bf16"
    with pytest.raises(params.ParamsError, match=r"sae_autocast='fp16'; valid: \['auto', 'none', 'bf16'\]"):
        params.load("paulo_fig1_matched_cosines", "smoke", sae_autocast="fp16")


def test_float16_stored_activations_train_close_to_float32(data):
    """Training on activations stored in float16 (`acts_dtype: float16`; the batch source upcasts each batch to
    float32) lands within 1% of the float32-stored run's held-out FVU."""
    acts, held = data
    cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=acts.shape[0], dead_tokens=2048, log_every=16, lr=1e-2)
    f32, _ = train_sae(acts, cfg, progress=False)
    f16, _ = train_sae(acts.astype(np.float16), cfg, progress=False)
    assert all(p.dtype == torch.float32 for p in f16.parameters())
    assert not torch.equal(f32.W_dec, f16.W_dec)
    x = torch.from_numpy(held)
    with torch.no_grad():
        a, b = (float(fvu(x, s.decode(s.encode(x)))) for s in (f32, f16))
    assert a < 0.3 and abs(a - b) < 0.01 * a, f"held-out FVU float32-stored {a:.4f}, float16-stored {b:.4f}"
