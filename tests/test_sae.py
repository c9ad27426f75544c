import dataclasses
import json

import numpy as np
from helpers import planted
import pytest
import torch
from safetensors.torch import save_file

from saesanity.sae import TopKSAE, TrainConfig, load_sae, save_saelens, train_sae
from saesanity.sae.io import SAEFormatError
from saesanity.sae.train import batch_order


def _dense_forward(sae, x):
    return sae.decode(sae.encode(x))


@pytest.mark.parametrize("d_sae,k", [(40, 5), (640, 3)])
def test_sparse_path_matches_dense_autograd(d_sae, k):
    torch.manual_seed(0)
    sae_a, sae_b = TopKSAE(12, d_sae, k, seed=2), TopKSAE(12, d_sae, k, seed=2)
    with torch.no_grad():
        for s in (sae_a, sae_b):
            s.b_dec.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.randn(30, 12)
    target = torch.randn(30, 12)
    (sae_a(x) - target).pow(2).sum().backward()
    (_dense_forward(sae_b, x) - target).pow(2).sum().backward()
    for (name, pa), pb in zip(sae_a.named_parameters(), sae_b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_encode_is_relu_topk_of_preacts():
    sae = TopKSAE(6, 20, 3, seed=0)
    with torch.no_grad():
        sae.b_enc.fill_(-0.05)
    x = torch.randn(8, 6)
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    z = sae.encode(x)
    assert ((z != 0).sum(1) <= 3).all()
    for b in range(8):
        top = pre[b].topk(3).indices
        torch.testing.assert_close(z[b, top], pre[b, top].clamp_min(0))


def test_saelens_roundtrip_reproduces_outputs(tmp_path):
    from sae_lens import SAE

    sae = TopKSAE(16, 64, 4, seed=1)
    with torch.no_grad():
        sae.b_enc.normal_()
        sae.b_dec.normal_()
    save_saelens(sae, tmp_path, {"hook_name": "mlp_out.3"})
    theirs = SAE.load_from_disk(str(tmp_path))
    x = torch.randn(50, 16)
    with torch.no_grad():
        torch.testing.assert_close(theirs.encode(x), sae.encode(x))
        torch.testing.assert_close(theirs.decode(sae.encode(x)), sae.decode(sae.encode(x)))
        torch.testing.assert_close(theirs(x), sae(x), rtol=1e-5, atol=1e-5)
        ours_again = load_sae(tmp_path)
        torch.testing.assert_close(ours_again(x), sae(x))


def test_sparsify_layout_loads(tmp_path):
    sae = TopKSAE(8, 24, 3, seed=4)
    save_file({"encoder.weight": sae.W_enc.detach().t().contiguous(), "encoder.bias": sae.b_enc.detach(),
               "W_dec": sae.W_dec.detach(), "b_dec": sae.b_dec.detach()}, tmp_path / "sae.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"k": 3, "num_latents": 24, "d_in": 8}))
    x = torch.randn(5, 8)
    torch.testing.assert_close(load_sae(tmp_path)(x), sae(x))


def test_unknown_sae_format(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(SAEFormatError, match="unknown SAE format"):
        load_sae(tmp_path)


def test_k_must_be_below_latents():
    with pytest.raises(ValueError, match="k=64 must satisfy 0 < k < d_sae=64"):
        TopKSAE(8, 64, 64)


def test_two_seeds_see_identical_batches():
    acts, _ = planted(n=4096)
    seen = {0: [], 1: []}
    for seed in (0, 1):
        cfg = TrainConfig(d_sae=64, k=4, batch_size=512, n_tokens=4096, seed=seed, data_seed=7)
        train_sae(acts, cfg, progress=False, on_batch=lambda step, x, s=seed: seen[s].append(x.clone()))
    assert len(seen[0]) == 8 and all(torch.equal(a, b) for a, b in zip(seen[0], seen[1]))
    order_a = batch_order(4096, TrainConfig(d_sae=64, k=4, batch_size=512, n_tokens=4096, data_seed=7))
    order_b = batch_order(4096, TrainConfig(d_sae=64, k=4, batch_size=512, n_tokens=4096, data_seed=8))
    assert not np.array_equal(order_a, order_b)


def test_seed_changes_initialisation_only():
    a, b = TopKSAE(8, 32, 4, seed=0), TopKSAE(8, 32, 4, seed=1)
    assert not torch.equal(a.W_enc, b.W_enc)
    torch.testing.assert_close(a.W_dec.norm(dim=1), torch.ones(32))


def test_training_recovers_planted_features_and_logs():
    acts, feats = planted(d=32, n_feat=48)
    acts6 = np.concatenate([acts] * 6)
    cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=acts6.shape[0], lr=1e-2, log_every=5, dead_tokens=2048)
    sae, log = train_sae(acts6, cfg, progress=False)
    assert log[-1]["fvu"] < 0.2 < log[0]["fvu"]
    assert {"fvu", "l0", "dead_frac", "aux", "tokens"} <= set(log[0])
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(64), rtol=1e-4, atol=1e-4)
    cos = torch.from_numpy(feats).float() @ sae.W_dec.t().detach()
    assert cos.max(1).values.mean() > 0.9  # mean max cosine of the planted directions to the decoder


def test_checkpoint_resume_gives_same_result(tmp_path):
    acts, _ = planted(n=4096)
    cfg = TrainConfig(d_sae=32, k=4, batch_size=256, n_tokens=4096, log_every=1)
    full, _ = train_sae(acts, cfg, progress=False)
    ckpt = tmp_path / "ck.pt"
    import saesanity.sae.train as T

    calls = []

    def die(step, x):
        calls.append(step)
        if step == 9:
            raise KeyboardInterrupt

    orig = T.time.perf_counter
    T_counter = iter(range(0, 10**9, 100))  # make every step look 100 s after the last save
    T.time.perf_counter = lambda: next(T_counter)
    try:
        with pytest.raises(KeyboardInterrupt):
            train_sae(acts, cfg, progress=False, checkpoint=ckpt, on_batch=die)
    finally:
        T.time.perf_counter = orig
    assert ckpt.exists()
    resumed, log = train_sae(acts, cfg, progress=False, checkpoint=ckpt)
    assert log[-1]["step"] == 15
    torch.testing.assert_close(resumed.W_dec, full.W_dec)


def test_nan_activations_rejected_by_training():
    acts, _ = planted(n=1024)
    acts[700, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN/inf \(row 700"):
        train_sae(acts, TrainConfig(d_sae=32, k=4, batch_size=1024, n_tokens=1024), progress=False)
    acts[700, 3] = np.inf
    with pytest.raises(ValueError, match=r"NaN/inf \(row 700"):
        train_sae(acts, TrainConfig(d_sae=32, k=4, batch_size=1024, n_tokens=1024), progress=False)
    # finite values whose sum overflows are not mistaken for NaN/inf (the batch check sums first)
    from saesanity.sae.train import MemmapSource

    acts[700, 3] = acts[701, 3] = 3e38
    x = MemmapSource(acts, np.arange(1024)[None]).batch(0)
    assert not torch.isfinite(x.sum()) and torch.isfinite(x).all()


def test_mis_shaped_decoder_rejected(tmp_path):
    sae = TopKSAE(8, 24, 3, seed=4)
    save_file({"encoder.weight": sae.W_enc.detach().t().contiguous(), "encoder.bias": sae.b_enc.detach(),
               "W_dec": sae.W_dec.detach().t().contiguous(), "b_dec": sae.b_dec.detach()}, tmp_path / "sae.safetensors")
    (tmp_path / "cfg.json").write_text(json.dumps({"k": 3, "num_latents": 24, "d_in": 8}))
    with pytest.raises(ValueError, match=r"W_dec has shape \(8, 24\); W_enc \[8, 24\] needs \(24, 8\)"):
        load_sae(tmp_path)


def test_snapshot_is_the_shorter_run():
    acts, _ = planted(n=4096)
    long_cfg = TrainConfig(d_sae=32, k=4, batch_size=256, n_tokens=4096, log_every=3, warmup_steps=4,
                           dead_tokens=600)
    got = {}
    train_sae(acts, long_cfg, progress=False,
              snapshots={n: (lambda sae, log, n=n: got.setdefault(n, ({k: v.clone() for k, v in sae.state_dict().items()}, log))) for n in (1000, 2560)})
    for n in (1000, 2560):
        short, short_log = train_sae(acts, dataclasses.replace(long_cfg, n_tokens=n), progress=False)
        state, log = got[n]
        for name, t in short.state_dict().items():
            torch.testing.assert_close(state[name], t, rtol=0, atol=0, msg=name)
        assert log == short_log
    with pytest.raises(ValueError, match=r"snapshot at 4,096 tokens: must lie in \[batch_size, n_tokens\)"):
        train_sae(acts, long_cfg, progress=False, snapshots={4096: lambda *a: None})


def test_load_release_reads_what_sae_lens_returns(tmp_path, monkeypatch):
    """The hub path (SAELens `from_pretrained`) on a local stand-in: whatever SAE sae_lens returns is read
    back through our loader with the same outputs."""
    import sae_lens

    from saesanity.sae import ReLUSAE, load_release

    ours = ReLUSAE(16, 48, seed=2)
    with torch.no_grad():
        ours.b_dec.normal_()
    save_saelens(ours, tmp_path / "stand-in")
    calls = []

    def fake(release, sae_id, device="cpu", **kw):
        calls.append((release, sae_id))
        return sae_lens.SAE.load_from_disk(str(tmp_path / "stand-in"))

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", staticmethod(fake))
    got = load_release("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_768")
    assert calls == [("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_768")]
    x = torch.randn(20, 16)
    with torch.no_grad():
        torch.testing.assert_close(got(x), ours(x), rtol=1e-5, atol=1e-5)


def test_auxk_dense_over_dead_latents_equals_the_definition():
    """AuxK on the dead columns only = FVU(resid, decode of the k_aux most active dead latents), grads too."""
    torch.manual_seed(0)
    from saesanity.metrics import fvu

    for n_dead in (40, 200):  # ≤ F/2: dense over the dead columns; > F/2: the sparse top-k path
        sae = TopKSAE(24, 300, 6, seed=1)
        x = torch.randn(64, 24)
        dead = torch.zeros(300, dtype=torch.bool)
        dead[torch.randperm(300)[:n_dead]] = True
        with torch.no_grad():
            x_hat = sae(x)
            pre = sae.pre_acts(x)
        got = sae.auxk(x, x_hat, pre, dead, 12)
        g_got = torch.autograd.grad(got, [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec])
        # reference: plain dense autograd of the definition
        pre_ref = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        masked = pre_ref.detach().masked_fill(~dead, -torch.inf)
        idx = masked.topk(12, dim=1).indices
        z = torch.zeros_like(pre_ref).scatter(1, idx, torch.relu(pre_ref.gather(1, idx)))
        ref = fvu((x - x_hat).detach(), z @ sae.W_dec)
        g_ref = torch.autograd.grad(ref, [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec])
        assert torch.allclose(got, ref, atol=1e-6)
        for a, b in zip(g_got, g_ref):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_linear_lr_schedule_is_transformers_after_the_warm_up():
    """lr_schedule='linear' decays as transformers' get_linear_schedule_with_warmup (sparsify's) once the warm-up is
    over, reaching 0 after the last step; 'constant' is not in the key (old keys hold); snapshots are refused."""
    from transformers import get_linear_schedule_with_warmup

    from saesanity.sae.train import lr_at

    cfg = TrainConfig(d_sae=16, k=2, batch_size=8, n_tokens=8 * 50, lr=2e-3, warmup_steps=10, lr_schedule="linear")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    ref = get_linear_schedule_with_warmup(opt, num_warmup_steps=10, num_training_steps=50).lr_lambdas[0]
    for step in range(10, 50):
        assert lr_at(cfg, step) == pytest.approx(cfg.lr * ref(step))
    assert lr_at(cfg, 49) > 0 and lr_at(cfg, 50) == 0.0
    assert [lr_at(cfg, s) for s in (0, 4, 9)] == pytest.approx([cfg.lr * (s + 1) / 10 for s in (0, 4, 9)])
    const = dataclasses.replace(cfg, lr_schedule="constant")
    assert "lr_schedule" not in const.key() and cfg.key()["lr_schedule"] == "linear"
    assert lr_at(const, 49) == cfg.lr
    acts, _ = planted(n=400)
    with pytest.raises(ValueError, match="snapshots need a constant learning rate"):
        train_sae(acts, cfg, progress=False, snapshots={80: lambda sae, log: None})
    with pytest.raises(ValueError, match="lr_schedule='cosine'; valid"):
        dataclasses.replace(cfg, lr_schedule="cosine")


def test_training_workspace_is_reused_per_shape_across_a_family_of_sizes():
    """The [B, F] pre-activation buffer is one per shape: members of several sizes stepping in turn each find theirs
    again (no fresh allocation a step), and only the most recent `_WORK_SHAPES` shapes are held."""
    from saesanity.sae import topk

    topk._WORK.clear()
    shapes = [(64, 32), (64, 48), (64, 96)]
    first = [topk._workspace(s, torch.float32, "cpu") for s in shapes]
    again = [topk._workspace(s, torch.float32, "cpu") for s in shapes]
    assert all(a is b for a, b in zip(first, again))
    for f in range(topk._WORK_SHAPES + 1):
        topk._workspace((8, 100 + f), torch.float32, "cpu")
    assert len(topk._WORK) == topk._WORK_SHAPES and (8, 100) not in {k[0] for k in topk._WORK}


def test_adam_over_contiguous_aliases_is_plain_fused_adam_bit_for_bit():
    """train._Adam hands TopKSAE's column-major W_enc to the fused kernel as a contiguous alias (no copies): the
    parameters after some steps equal plain fused Adam's exactly, and a state saved by plain Adam (moments in
    W_enc's own [D, F] shape, as checkpoints before the alias) resumes to the same numbers."""
    from saesanity.sae.train import _Adam

    torch.manual_seed(0)
    x = torch.randn(64, 16)

    def make():
        sae = TopKSAE(16, 48, 4, seed=0)
        assert not sae.W_enc.is_contiguous()  # the case the alias is for
        return sae

    def steps(sae, opt, n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            loss = (sae(x) - x).pow(2).sum()
            loss.backward()
            opt.step()

    ref = make()
    plain = torch.optim.Adam(ref.parameters(), lr=1e-2, fused=True)
    steps(ref, plain, 3)
    mid = plain.state_dict()
    mid = {"state": {k: {n: t.clone() for n, t in v.items()} for k, v in mid["state"].items()},
           "param_groups": mid["param_groups"]}
    mid_params = {n: p.detach().clone() for n, p in ref.named_parameters()}
    steps(ref, plain, 3)

    ours = make()
    opt = _Adam(ours, 1e-2, "cpu")
    assert len(opt.aliases) == 1 and opt.aliases[0][0] is ours.W_enc
    steps(ours, opt, 6)
    for n, p in ref.named_parameters():
        assert torch.equal(p, dict(ours.named_parameters())[n]), n

    resumed = make()
    with torch.no_grad():
        for n, p in resumed.named_parameters():
            p.copy_(mid_params[n])
    opt = _Adam(resumed, 1e-2, "cpu")
    opt.load_state_dict(mid)  # plain Adam's [D, F] moments of W_enc: transposed onto the alias
    steps(resumed, opt, 3)
    for n, p in ref.named_parameters():
        assert torch.equal(p, dict(resumed.named_parameters())[n]), n
