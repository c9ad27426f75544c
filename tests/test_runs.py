import dataclasses
import json

import numpy as np
import pytest
import torch

from saesanity import runs
from saesanity.activations import ActivationSpec, artifact_dirs, collect
from saesanity.metrics import fvu
from saesanity.sae import TopKSAE, TrainConfig


def test_evaluate_pools_like_one_batch():
    rng = np.random.default_rng(0)
    acts = (rng.normal(size=(1000, 8)) + 3).astype(np.float32)
    sae = TopKSAE(8, 32, 3, seed=0)
    res = runs.evaluate(sae, acts, batch=128)
    x = torch.from_numpy(acts)
    with torch.no_grad():
        assert res["fvu"] == pytest.approx(fvu(x, sae(x)).item(), rel=1e-5)
    assert res["l0"] <= 3 and res["n_tokens"] == 1000


def test_held_out_metrics_are_cached_by_content_and_equal_the_uncached(iso_cache, tmp_path):
    """`runs.evaluate` / `recon_metrics` / `evaluate_all` / `level_metrics` keep their result keyed by the SAE's
    and the rows' content: the same call reads it back (bit-identical to the uncached function), and one ulp of
    a weight, another row, another argument or a memmap of the same bytes behave as they should."""
    from saesanity.sae import MatryoshkaBatchTopKSAE

    rng = np.random.default_rng(1)
    acts = rng.normal(size=(600, 8)).astype(np.float16)
    sae = TopKSAE(8, 32, 3, seed=0)
    n_eval = lambda: sum(1 for p in (iso_cache / "eval").iterdir() if p.is_dir())  # noqa: E731
    first = runs.evaluate(sae, acts, batch=128, noise_shards=4)
    raw = runs.recon_metrics.__wrapped__(sae, acts, batch=128, noise_shards=4)
    assert set(first) == {"fvu", "l0", "n_tokens", "fvu_shard_sd", "l0_shard_sd"} and n_eval() == 1
    assert all(first[k] == raw[k] for k in first)
    np.save(tmp_path / "held.npy", acts)
    assert runs.evaluate(sae, np.load(tmp_path / "held.npy", mmap_mode="r"), batch=128, noise_shards=4) == first
    assert n_eval() == 1                                                    # same bytes: read back
    assert runs.evaluate(sae, acts, batch=128) != first and n_eval() == 2  # another argument: no shards
    with torch.no_grad():
        sae.W_dec[0, 0] = torch.nextafter(sae.W_dec[0, 0], torch.tensor(np.inf))
    got = runs.evaluate(sae, acts, batch=128, noise_shards=4)                 # recomputed: a new key
    raw = runs.recon_metrics.__wrapped__(sae, acts, batch=128, noise_shards=4)
    assert n_eval() == 3 and all(got[k] == raw[k] for k in got)
    other = acts.copy()
    other[-1] = 0
    runs.evaluate(sae, other, batch=128, noise_shards=4)
    assert n_eval() == 4
    rec = runs.recon_metrics(sae, acts, batch=128)
    assert rec == runs.recon_metrics.__wrapped__(sae, acts, batch=128)
    full = runs.evaluate_all(sae, acts)
    want = runs.evaluate_all.__wrapped__(sae, acts)
    assert full["frequency"].dtype == want["frequency"].dtype and np.array_equal(full["frequency"], want["frequency"])
    assert {k: v for k, v in full.items() if k != "frequency"} == {k: v for k, v in want.items() if k != "frequency"}
    m = MatryoshkaBatchTopKSAE(8, 16, 2, widths=(4,), seed=0)
    m.threshold.fill_(0.05)
    assert runs.level_metrics(m, acts, (4, 16), noise_shards=3) == runs.level_metrics.__wrapped__(m, acts, (4, 16),
                                                                                                  noise_shards=3)
    before = n_eval()
    m.threshold.fill_(0.5)                                                  # a buffer, not a weight: in the key too
    assert runs.level_metrics(m, acts, (4, 16), noise_shards=3) == runs.level_metrics.__wrapped__(m, acts, (4, 16),
                                                                                                  noise_shards=3)
    assert n_eval() == before + 1


def test_trained_saes_are_cached_and_reused(iso_cache, tiny_llama_dir, monkeypatch):
    spec = ActivationSpec(model=str(tiny_llama_dir), variant="trained", corpus="debian:fortunes", n_tokens=2048,
                          seq_len=65, seed=0)
    acts = collect(spec, ["mlp_out.1"], progress=False)["mlp_out.1"]
    (d,) = artifact_dirs(spec, ["mlp_out.1"])
    cfg = TrainConfig(d_sae=64, k=4, batch_size=512, n_tokens=2048, seed=3)
    first = runs.train_cached(acts, d, cfg, progress=False)
    monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("retrained a cached SAE"))
    again = runs.train_cached(acts, d, cfg, progress=False)
    assert again.path == first.path and (first.path / "sae_weights.safetensors").exists()
    torch.testing.assert_close(again.sae.W_dec, first.sae.W_dec)
    assert first.info["tokens_per_s"] > 0 and len(first.log) >= 1


def test_sweep_rejects_unknown_axis():
    from saesanity import params

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke")
    with pytest.raises(ValueError, match="sweep axis 'width'; valid: 'd_sae', 'k', 'n_tokens'"):
        runs.sweep(P, "width", [1, 2])


def test_sweep_params_reject_impossible_points():
    from saesanity import params

    with pytest.raises(params.ParamsError, match=r"sweep values \[4608\] violate 0 < k < d_sae"):
        params.load("paulo_fig5_overlap_vs_size_k_tokens", "default", ks=[16, 4608])
    with pytest.raises(params.ParamsError, match=r"train_tokens \[16000000\] must lie in"):
        params.load("paulo_fig5_overlap_vs_size_k_tokens", "default", train_tokens=[16_000_000])


def test_training_length_sweep_trains_once_per_seed(iso_cache, tiny_llama_dir, monkeypatch):
    from saesanity import params

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", model=str(tiny_llama_dir), hookpoint="mlp_out.1",
                    d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024, corpus="debian:fortunes",
                    train_tokens=[1024, 2048, 4096], epochs=1)
    calls = []
    real = runs.train_family
    monkeypatch.setattr(runs, "train_family", lambda src, cfgs, **kw: calls.extend(c.n_tokens for c in cfgs)
                        or real(src, cfgs, **kw))
    rows = runs.sweep(P, "n_tokens", [1024, 2048, 4096], progress=False)
    assert calls == [4096, 4096]  # one run per seed; the 1024 and 2048 points are its snapshots
    assert [r["n_tokens"] for r in rows] == [1024, 2048, 4096]
    acts, d = runs.data_for(P, "train", False)
    short = runs.train_cached(acts, d, dataclasses.replace(runs.train_cfg(P, P.seeds[0]), n_tokens=2048), progress=False)
    from saesanity.sae import train_sae

    fresh, _ = train_sae(acts, short.cfg, progress=False)
    torch.testing.assert_close(short.sae.W_dec, fresh.W_dec, rtol=0, atol=0)
    calls.clear()  # with the longest cached and a shorter one lost, only the lost length is retrained
    import shutil
    shutil.rmtree(short.path)
    runs.sweep(P, "n_tokens", [1024, 2048, 4096], progress=False)
    assert calls == [2048]


def test_training_length_sweep_with_a_decaying_rate_trains_each_length_as_its_own_run(iso_cache, tiny_llama_dir,
                                                                                    monkeypatch):
    """lr_schedule linear: a shorter run is no snapshot of a longer one, so every length is a member of one family
    (one pass), each bitwise the run trained alone; runs.convergence then checks those runs."""
    from saesanity import params
    from saesanity.sae import train_sae

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", model=str(tiny_llama_dir), hookpoint="mlp_out.1",
                    d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024, corpus="debian:fortunes",
                    train_tokens=[1024, 2048, 4096], lr_schedule="linear", epochs=1)
    calls = []
    real = runs.train_family
    monkeypatch.setattr(runs, "train_family", lambda src, cfgs, **kw: calls.append(sorted(c.n_tokens for c in cfgs))
                        or real(src, cfgs, **kw))
    rows = runs.sweep(P, "n_tokens", [1024, 2048, 4096], progress=False)
    assert calls == [[1024, 1024, 2048, 2048, 4096, 4096]]  # one pass, every length and seed its own member
    assert [r["n_tokens"] for r in rows] == [1024, 2048, 4096]
    acts, d = runs.data_for(P, "train", False)
    cfg = dataclasses.replace(runs.train_cfg(P, P.seeds[0]), n_tokens=2048)
    assert cfg.lr_schedule == "linear"
    short = runs.train_cached(acts, d, cfg, progress=False)
    fresh, _ = train_sae(acts, cfg, progress=False)
    torch.testing.assert_close(short.sae.W_dec, fresh.W_dec, rtol=0, atol=0)
    rec = runs.convergence(P, progress=False)
    assert [p["n_tokens"] for p in rec["points"]] == [1024, 2048, 4096] and rec["converged"] in (True, False)


def test_a_sweep_point_publishes_the_runs_its_convergence_check_compares(iso_cache, tiny_llama_dir, monkeypatch):
    """Along d_sae, each point's run to n publishes n/4 and n/2 as snapshots, so runs.convergence at that point
    (and fvu_convergence of one seed) trains nothing more; a decaying rate publishes none."""
    from saesanity import params

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", model=str(tiny_llama_dir), hookpoint="mlp_out.1",
                    d_sae=64, k=4, n_tokens=2048, epochs=2, batch_size=512, n_eval_tokens=1024,
                    corpus="debian:fortunes", sizes=[32, 64], train_tokens=[1024, 4096])
    acts, _ = runs.data_for(P, "train", False)
    assert runs.check_lengths(P) == [1024, 2048, 4096] and runs.snapshot_lengths(P, acts) == (1024, 2048)
    assert runs.snapshot_lengths(dataclasses.replace(P, lr_schedule="linear"), acts) == ()
    calls = []
    real = runs.train_family
    monkeypatch.setattr(runs, "train_family", lambda src, cfgs, **kw: calls.append(
        [(c.d_sae, c.n_tokens, tuple(sorted(s))) for c, s in zip(cfgs, kw.get("snapshots") or [{}] * len(cfgs))])
        or real(src, cfgs, **kw))
    runs.sweep(P, "d_sae", [32, 64], progress=False)
    assert calls == [[(s, 4096, (1024, 2048)) for s in (32, 32, 64, 64)]]
    calls.clear()
    rec = runs.convergence(P, d_sae=32, progress=False)
    assert calls == [] and [p["n_tokens"] for p in rec["points"]] == [1024, 2048, 4096]
    assert rec["checks"] == ["fvu", "shared"] and rec["converged"] in (True, False)
    held = runs.heldout_acts(P, progress=False)
    one = runs.fvu_convergence(P, dataclasses.replace(runs.train_cfg(P, P.seeds[0]), d_sae=64), held, progress=False)
    assert calls == [] and one["checks"] == ["fvu"]
    by_hand = [runs.evaluate(runs.train_cached(acts, runs.data_for(P, "train", False)[1], dataclasses.replace(
        runs.train_cfg(P, P.seeds[0]), d_sae=64, n_tokens=m), progress=False).sae, held)["fvu"] for m in (2048, 4096)]
    assert one["fvu_rel_change"] == pytest.approx((by_hand[1] - by_hand[0]) / by_hand[0])


def test_calibrate_sparsity_moves_relu_l0_to_target(iso_cache, tmp_path):
    from helpers import planted

    from saesanity import params

    acts, _ = planted(n=16384, d=32, n_feat=64)  # λ₁ 0.1 / 0.3 / 1 → L0 28 / 19 / 0.7 here
    acts_dir = tmp_path / "acts"
    acts_dir.mkdir()
    P = params.load("paulo_fig4_overlap_vs_layer_position_arch", "smoke")
    cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=16384, lr=5e-3, architecture="relu", l1_coefficient=0.1)
    out, tried = runs.calibrate_sparsity(P, acts, acts_dir, cfg, 20.0, acts[:2048], n_tokens=16384, n_runs=4,
                                         progress=False)
    l0s = [t["l0"] for t in tried]
    best = min(l0s, key=lambda v: abs(np.log(v / 20.0)))
    assert abs(np.log(best / 20.0)) < abs(np.log(l0s[0] / 20.0))  # the search got closer than its start
    assert abs(np.log(best / 20.0)) < np.log(1.1), tried  # within 10% of the target
    assert out.l1_coefficient == next(t["l1_coefficient"] for t in tried if t["l0"] == best)
    topk = dataclasses.replace(cfg, architecture="topk")
    assert runs.calibrate_sparsity(P, acts, acts_dir, topk, 4.0, acts, n_tokens=4096, n_runs=4) == (topk, [])


def test_next_coefficient_solves_a_power_law():
    law = lambda lam: 50.0 * lam ** -1.5  # noqa: E731  (L0 = 50 λ^-1.5)
    first = runs._next_coefficient([(1.0, law(1.0))], 10.0)  # slope −1 assumed: 1 · 50/10
    assert first == pytest.approx(5.0)
    second = runs._next_coefficient([(1.0, law(1.0)), (first, law(first))], 10.0)  # bracketed: exact in log–log
    assert law(second) == pytest.approx(10.0, rel=1e-9)


def test_evaluate_compares_with_the_saes_own_input_transform():
    """An SAE trained on per-token centred activations (SAELens GPT-2 releases) is scored against the centred
    activations it reconstructs, not the raw ones (`SAEBase.transform_input`)."""
    from saesanity import baselines

    rng = np.random.default_rng(1)
    acts = (rng.normal(size=(512, 8)) + rng.normal(size=(512, 1)) * 4).astype(np.float32)  # large per-token means
    sae = TopKSAE(8, 32, 3, seed=0)
    sae.input_transform = "center"
    x = torch.from_numpy(acts)
    xc = x - x.mean(1, keepdim=True)
    with torch.no_grad():
        want = ((xc - sae(xc)).pow(2).sum() / (xc - xc.mean(0)).pow(2).sum()).item()
        raw = ((x - sae(x)).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
    assert abs(want - raw) > 0.01  # far above the 1e-5 tolerance below
    assert runs.evaluate(sae, acts)["fvu"] == pytest.approx(want, rel=1e-5)
    assert baselines.recon_metrics(sae, acts)["fvu"] == pytest.approx(want, rel=1e-5)
    # the noise floor: the sd of the FVU (and L0) of the same SAE on each of 4 contiguous shards of 128 rows
    ev = runs.evaluate(sae, acts, noise_shards=4)
    shards = [runs.evaluate(sae, acts[128 * i:128 * (i + 1)]) for i in range(4)]
    assert ev["fvu"] == runs.evaluate(sae, acts)["fvu"] and "fvu_shard_sd" not in runs.evaluate(sae, acts)
    assert ev["fvu_shard_sd"] == pytest.approx(np.std([r["fvu"] for r in shards], ddof=1), rel=1e-6)
    assert ev["l0_shard_sd"] == pytest.approx(np.std([r["l0"] for r in shards], ddof=1), rel=1e-6, abs=1e-12)


def test_streamed_seed_saes_need_no_activation_cache(iso_cache, tiny_llama_dir, monkeypatch):
    """`activations: streamed` trains the seed family from the model's forward pass: no training activations
    are written, the SAEs are cached under the stream's key, and a rerun trains nothing."""
    from saesanity import params

    P = params.load("paulo_fig1_matched_cosines", "smoke", model=str(tiny_llama_dir), hookpoint="mlp_out.1",
                    d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024, corpus="debian:fortunes",
                    seq_len=65, activations="streamed", stream_buffer_tokens=2048, seeds=[0, 1])
    saes, info = runs.seed_saes(P, progress=False)
    assert len(saes) == 2 and "streamed" in info["activations"]
    assert not (iso_cache / "activations").exists()
    assert saes[0].log[-1]["tokens"] == 4096 and not torch.equal(saes[0].sae.W_dec, saes[1].sae.W_dec)
    cached_P = dataclasses.replace(P, activations="cached")
    assert runs.seed_saes(cached_P, progress=False)[0][0].path != saes[0].path  # another key: another batch order
    monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("retrained a cached streamed SAE"))
    again, _ = runs.seed_saes(P, progress=False)
    assert [t.path for t in again] == [t.path for t in saes]
    held = runs.heldout_metrics(P, saes, progress=False)
    assert all(0 < h["fvu"] < 2 for h in held)


def test_streamed_snapshot_is_the_shorter_streamed_run(iso_cache, tiny_llama_dir):
    """With a streamed source, a run shorter than the shuffle buffer sees the first batches of a longer one,
    so the sweep's snapshots are the SAEs a shorter run trains (their keys leave n_tokens to the config)."""
    from saesanity import params

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", model=str(tiny_llama_dir), hookpoint="mlp_out.1",
                    d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024, corpus="debian:fortunes",
                    seq_len=65, activations="streamed", stream_buffer_tokens=4096, train_tokens=[1024, 4096])
    acts, _ = runs.sweep_train(P, "n_tokens", [1024, 4096], progress=False)
    snap = runs.train_cached(acts, None, dataclasses.replace(runs.train_cfg(P, P.seeds[0]), n_tokens=1024),
                             progress=False)
    from saesanity.sae.train import train_family

    direct, _ = train_family(acts.source(snap.cfg), [snap.cfg], progress=False)[0]
    torch.testing.assert_close(snap.sae.W_dec, direct.W_dec, rtol=0, atol=0)


class _Spy:
    """Records the families every `train_families` call trains ([(hookpoint, n SAEs)]) and fails on `train_family`
    (a single-source pass) while `single_ok` is False."""

    def __init__(self, monkeypatch, single_ok=False):
        self.calls = []
        real = runs.train_families
        monkeypatch.setattr(runs, "train_families", lambda fams, **kw: self.calls.append(
            [(src.hookpoint, len(cfgs)) for src, cfgs in fams]) or real(fams, **kw))
        if not single_ok:
            monkeypatch.setattr(runs, "train_family", lambda *a, **k: pytest.fail("a single-hookpoint pass ran"))


def test_streamed_hookpoint_pairs_train_every_hookpoint_in_one_pass(iso_cache, tiny_llama_dir, monkeypatch):
    """With `activations: streamed`, hookpoint_pairs trains every hookpoint's missing SAEs in one pass (one model
    forward per chunk, each asking for every hookpoint); each SAE is keyed as a single-hookpoint run keys it and
    is bitwise that run's SAE, so single-hookpoint lookups find multi-pass SAEs and the pass skips theirs."""
    import saesanity.stream as stream
    from saesanity import params
    from saesanity.sae.train import train_family

    P = params.load("paulo_fig4_overlap_vs_layer_position_arch", "smoke", model=str(tiny_llama_dir),
                    hookpoint="mlp_out.1", d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024,
                    corpus="debian:fortunes", seq_len=65, activations="streamed", stream_buffer_tokens=2048,
                    layers=[0, 2], layer_sizes=[64, 96], calib_tokens=2048)
    points = [("mlp_out.0", 64), ("mlp_out.0", 96), ("mlp_out.2", 96), ("resid_post.2", 64), ("mlp_out.0", 64)]
    train = runs.data_for(P, "train", False, ["resid_post.2"])
    first = runs.train_many(P, *train["resid_post.2"], runs.point_cfgs(P, 64), False, hookpoint="resid_post.2")
    asked = []
    real_run = stream.run_to_hookpoints
    monkeypatch.setattr(stream, "run_to_hookpoints", lambda lm, ids, hps: asked.append(list(hps)) or
                        real_run(lm, ids, hps))
    spy = _Spy(monkeypatch)
    rows = runs.hookpoint_pairs(P, points, progress=False)
    assert spy.calls == [[("mlp_out.0", 4), ("mlp_out.2", 2)]]  # one pass; resid_post.2's pair was already cached
    assert asked and all(a == ["mlp_out.0", "mlp_out.2"] for a in asked)
    # 2 chunks of 2,048 rows, 64 usable rows a sequence, 16 sequences a forward: 2 forwards a chunk, once each
    assert len(asked) == 4
    assert [(r["hookpoint"], r["d_sae"]) for r in rows] == points and all(0 < r["heldout_fvu"][0] < 2 for r in rows)
    # a single-hookpoint lookup finds each multi-pass SAE, and it is the SAE a pass at that hookpoint alone trains
    train = runs.data_for(P, "train", False, ["mlp_out.0", "mlp_out.2"])
    cfgs = runs.point_cfgs(P, 64) + runs.point_cfgs(P, 96)
    found = runs.train_many(P, *train["mlp_out.0"], cfgs, False, hookpoint="mlp_out.0")
    alone = train_family(train["mlp_out.0"][0].source(cfgs[0]), cfgs, progress=False)
    for t, (sae, log) in zip(found, alone):
        assert t.log == log and all(torch.equal(v, sae.state_dict()[n]) for n, v in t.sae.state_dict().items())
        assert json.loads((t.path / "cfg.json").read_text())["metadata"]["hook_name"] == "mlp_out.0"
    again = runs.train_many(P, *runs.data_for(P, "train", False, ["resid_post.2"])["resid_post.2"],
                             runs.point_cfgs(P, 64), False, hookpoint="resid_post.2")
    assert [t.path for t in again] == [t.path for t in first]
    spy.calls.clear()
    runs.hookpoint_pairs(P, points, progress=False)
    assert spy.calls == []  # everything cached: no pass at all


def test_streamed_variant_saes_train_every_layer_in_one_pass(iso_cache, tiny_llama_dir, monkeypatch):
    from saesanity import baselines, params

    P = params.load("heap_metrics_vs_layer", "smoke", model=str(tiny_llama_dir), layers=[0, 1, 2], d_sae=64, k=4,
                    n_tokens=2048, batch_size=512, corpus="debian:fortunes", seq_len=65, activations="streamed",
                    stream_buffer_tokens=1024, variants=["control"])
    spy = _Spy(monkeypatch)
    saes = baselines.variant_saes(P, "control", progress=False)
    assert spy.calls == [[("resid_post.0", 1), ("resid_post.1", 1), ("resid_post.2", 1)]]
    assert list(saes) == baselines.hookpoints(P)
    V = baselines.view(P, "control")
    for h, t in saes.items():
        assert runs.is_trained(None, runs.train_cfg(V, P.seed), runs.data_for(V, "train", False, [h])[h][0])
        assert json.loads((t.path / "cfg.json").read_text())["metadata"]["hook_name"] == h
    assert not torch.equal(saes["resid_post.0"].sae.W_dec, saes["resid_post.2"].sae.W_dec)


def test_the_lookup_null_is_cached_by_content(iso_cache):
    """`baselines.lookup_null` keeps its result by the rows' and tokens' content: the second call reads it back,
    equal to the uncached computation, and other rows are another artifact."""
    from saesanity import baselines, params

    P = params.load("heap_metrics_vs_layer", "smoke", layers=[2], variants=["trained"])
    (first,) = baselines.variant_lookup_null(P, "trained", progress=False).values()
    (again,) = baselines.variant_lookup_null(P, "trained", progress=False).values()
    assert first == again and len([p for p in (iso_cache / "lookup").iterdir() if p.is_dir()]) == 1
    V = baselines.view(P, "trained")
    (h,) = baselines.hookpoints(P)
    (acts, a_dir), (held, h_dir) = runs.data_for(V, "train", False, [h])[h], runs.data_for(V, "heldout", False, [h])[h]
    tok = [np.load(d / "tokens.npy") for d in (a_dir, h_dir)]
    want = baselines._lookup_null(acts[:baselines.LOOKUP_MAX_ROWS], held, *tok, runs.activation_spec(V).drop_first,
                                  baselines.NOISE_SHARDS)
    assert json.loads(json.dumps(want)) == first and first["unigram_fvu"] > 0
    baselines.lookup_null(V, acts[:-1000], a_dir, held, h_dir)  # fewer training rows: computed anew
    assert len([p for p in (iso_cache / "lookup").iterdir() if p.is_dir()]) == 2
