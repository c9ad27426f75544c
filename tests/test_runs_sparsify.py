"""`trainer: sparsify` in the pipeline: sparsify trains a profile's TopK SAEs (one run per (d_sae, k, n_tokens),
its seeds together), the artifacts are sparsify's own files read by our loaders and cached under a key of the
rows, hookpoint and resolved recipe; other architectures train with ours on the same stream; bad settings
are refused in one line; under torchrun (2 gloo ranks) rank 0 publishes what the notebook then finds."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from saesanity import params, runs
from saesanity.sae import load_sae
from saesanity.sae import sparsify_trainer as st

SMALL = dict(d_sae=64, k=4, n_tokens=4096, batch_size=512, n_eval_tokens=1024, corpus="debian:fortunes", seq_len=64,
             hookpoint="mlp_out.1", trainer="sparsify", sparsify_overrides={"batch_size": 4, "lr_warmup_steps": 2})


def _P(stem, model_dir, **kw):
    return params.load(stem, "smoke", model=str(model_dir), **{**SMALL, **kw})


def test_sparsify_trains_the_seed_family_once_and_caches_it(iso_cache, tiny_neox_dir, monkeypatch):
    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir, seeds=[0, 1])
    saes, info = runs.seed_saes(P, progress=False)
    assert info["activations"]["sparsify"]["recipe"] == "paulo_belrose_2025"
    assert not (iso_cache / "activations").exists()  # sparsify needs no activation cache
    for t in saes:
        files = {f.name for f in t.path.iterdir()}
        assert {"cfg.json", "sae.safetensors", "sparsify_run.json", "training_log.json", "sparsify_stdout.txt"} <= files
        assert "Initializing SAEs with random seed(s) [0, 1]" in (t.path / "sparsify_stdout.txt").read_text()
        assert t.info["trainer"] == "sparsify" and t.info["steps"] == 4096 // 64 // 4  # 64 rows, 4 per step
        assert t.log[-1]["step"] == 15 and t.log[-1]["tokens"] == 4096 and 0 < t.log[-1]["fvu"] < 2
        assert t.sae.W_dec.shape == (64, 32) and t.sae.k == 4  # 64 latents, d_model 32
    assert not torch.equal(saes[0].sae.W_dec, saes[1].sae.W_dec)
    man = json.loads((saes[0].path / "sparsify_run.json").read_text())
    assert man["recipe"]["num_latents"] == 64 and man["recipe"]["ctx_len"] == 64 and man["recipe"]["batch_size"] == 4
    assert man["recipe"]["clip_grad_norm"] == 1.0  # the rest is the paper's recipe
    monkeypatch.setattr(st, "train_sparsify", lambda *a, **k: pytest.fail("retrained a cached sparsify SAE"))
    again, _ = runs.seed_saes(P, progress=False)
    assert [t.path for t in again] == [t.path for t in saes]
    held = runs.heldout_metrics(P, saes, progress=False)
    assert all(0 < h["fvu"] < 2 and h["l0"] <= 4 for h in held)


def test_a_seed_is_the_same_sae_alone_or_beside_others(iso_cache, tiny_neox_dir):
    """Why one key per seed is right: sparsify trains seed 1 bitwise the same with seed 0 beside it as alone."""
    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir, seeds=[0, 1])
    pair, _ = runs.seed_saes(P, progress=False)
    acts, _ = runs.data_for(P, "train", False)
    out = iso_cache / "alone"
    (folder,) = acts.train([runs.train_cfg(P, 1)], out, "cpu").values()
    alone = load_sae(folder)
    for name, p in pair[1].sae.state_dict().items():
        assert torch.equal(p, alone.state_dict()[name]), name


def test_the_run_equals_sparsify_called_directly(iso_cache, tiny_neox_dir, tmp_path):
    from saesanity.corpus import token_sequences
    from saesanity.models import load_model

    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir, seeds=[0, 1])
    saes, _ = runs.seed_saes(P, progress=False)
    lm = load_model(str(tiny_neox_dir), "trained", 0, "cpu", "float32")
    rows = token_sequences("debian:fortunes", lm.tokenizer, lm.tokenizer_id, 64, max_tokens=4096, progress=False)
    direct = st.train_sparsify(lm, rows[:64], ["mlp_out.1"], [0, 1], tmp_path / "run", recipe="paulo_belrose_2025",
                               num_latents=64, k=4, ctx_len=64, batch_size=4, lr_warmup_steps=2)
    for t in saes:
        ref = load_sae(direct["mlp_out.1"][t.cfg.seed])
        torch.testing.assert_close(t.sae.W_enc, ref.W_enc, rtol=0, atol=0)
        torch.testing.assert_close(t.sae.W_dec, ref.W_dec, rtol=0, atol=0)


def test_keys_follow_the_recipe_and_other_architectures_train_ours_on_the_stream(iso_cache, tiny_neox_dir):
    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir)
    acts, _ = runs.data_for(P, "train", False)
    cfg = runs.train_cfg(P, 0)
    other = runs.data_for(dataclasses.replace(P, sparsify_overrides={"batch_size": 8}), "train", False)[0]
    assert runs._fields(acts, None, cfg) != runs._fields(other, None, cfg)
    assert runs._fields(acts, None, cfg) != runs._fields(acts, None, dataclasses.replace(cfg, seed=1))
    relu = dataclasses.replace(cfg, architecture="relu")
    assert runs._fields(acts, None, relu) == runs._fields(acts.stream, None, relu)  # ours, streamed
    (t,) = runs.train_family_cached(acts, None, [relu], progress=False)
    assert t.info.get("trainer") is None and t.path == runs.artifact_path("sae", runs._fields(acts.stream, None, relu),
                                                                         runs._SAE_VERSION)


def test_sweep_along_tokens_trains_one_sparsify_run_per_length(iso_cache, tiny_neox_dir, monkeypatch):
    P = _P("paulo_fig5_overlap_vs_size_k_tokens", tiny_neox_dir, train_tokens=[2048, 4096])
    calls = []
    real = st.train_sparsify
    monkeypatch.setattr(st, "train_sparsify", lambda lm, rows, hps, seeds, out, **kw: calls.append(
        (rows.shape[0], tuple(seeds))) or real(lm, rows, hps, seeds, out, **kw))
    runs.sweep_train(P, "n_tokens", [2048, 4096], progress=False)
    assert sorted(calls) == [(32, (0, 1)), (64, (0, 1))]


@pytest.mark.parametrize("kw, match", [
    ({"trainer": "theirs"}, r"trainer='theirs'; valid: \['ours', 'sparsify'\]"),
    ({"sparsify_recipe": "nope"}, r"sparsify_recipe='nope'; valid: \['paulo_belrose_2025'"),
    ({"sparsify_overrides": {"k": 8}}, r"sparsify_overrides sets 'k': the profile's k sets it"),
    ({"sparsify_overrides": {"num_latents": 8}}, r"sets 'num_latents': the profile's d_sae sets it"),
    ({"sparsify_overrides": {"learning_rate": 1.0}}, r"unknown recipe field 'learning_rate'"),
    ({"hookpoint": "resid_pre.1"}, r"hookpoints \['resid_pre.1'\] are resid_pre"),
])
def test_bad_trainer_settings_are_refused_in_one_line(kw, match, tiny_neox_dir):
    with pytest.raises(params.ParamsError, match=match):
        _P("paulo_fig1_matched_cosines", tiny_neox_dir, **kw)


def test_too_few_tokens_for_one_sparsify_batch_is_refused(iso_cache, tiny_neox_dir):
    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir, sparsify_overrides={"batch_size": 128})
    with pytest.raises(st.SparsifyError, match="less than one sparsify batch of 128 sequences"):
        runs.seed_saes(P, progress=False)


def test_torchrun_two_ranks_publish_what_the_notebook_finds(iso_cache, tiny_neox_dir, monkeypatch):
    overrides = {**SMALL, "model": str(tiny_neox_dir)}
    args = ["paulo_fig1_matched_cosines", "smoke"]
    for k, v in overrides.items():
        args += ["--set", f"{k}={json.dumps(v) if isinstance(v, dict) else v}"]
    env = dict(os.environ, SAESANITY_CACHE=str(iso_cache), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "lib"), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "saesanity.pretrain", *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "on 2 rank(s): 3 seed SAEs" in r.stdout  # Fig. 1's smoke seeds: the pair and the noise floor's third
    P = _P("paulo_fig1_matched_cosines", tiny_neox_dir)
    monkeypatch.setattr(st, "train_sparsify", lambda *a, **k: pytest.fail("the notebook retrained a pretrained SAE"))
    saes, _ = runs.seed_saes(P, progress=False)
    assert all(t.info["world_size"] == 2 and t.info["trainer"] == "sparsify" for t in saes)
    assert not list(iso_cache.glob("sae/*.partial"))


def test_variant_layers_train_in_one_sparsify_run_and_match_single_hookpoint_keys(iso_cache, tiny_neox_dir,
                                                                                  monkeypatch):
    """Heap et al.'s layers: one sparsify run (one forward pass) trains every layer's SAE, each cached under the
    key its own single-hookpoint run would have, and equal to it bitwise."""
    from saesanity import baselines

    P = params.load("heap_metrics_vs_layer", "smoke", model=str(tiny_neox_dir), corpus="debian:fortunes",
                    layers=[0, 2], kind="resid_post", d_sae=64, k=4, n_tokens=4096, batch_size=512, seq_len=64,
                    n_eval_tokens=1024, n_splice_tokens=128, variants=["trained"], trainer="sparsify",
                    sparsify_overrides={"batch_size": 4, "grad_acc_steps": 2, "lr_warmup_steps": 2})
    calls = []
    real = st.train_sparsify
    monkeypatch.setattr(st, "train_sparsify", lambda lm, rows, hps, seeds, out, **kw: calls.append(
        (tuple(hps), tuple(seeds), kw["recipe"].name)) or real(lm, rows, hps, seeds, out, **kw))
    saes = baselines.variant_saes(P, "trained", progress=False)
    assert calls == [(("resid_post.0", "resid_post.2"), (0,), "heap_2025")]
    assert all(t.info["trainer"] == "sparsify" and t.info["hookpoints_in_run"] == ["resid_post.0", "resid_post.2"]
               for t in saes.values())
    V = baselines.view(P, "trained", "resid_post.2")
    acts, _ = runs.data_for(V, "train", False)
    (folder,) = acts.train([runs.train_cfg(V, 0)], iso_cache / "alone", "cpu").values()
    alone = load_sae(folder)
    assert runs.is_trained(None, runs.train_cfg(V, 0), acts)
    for name, p in saes["resid_post.2"].sae.state_dict().items():
        assert torch.equal(p, alone.state_dict()[name]), name


def test_frozen_baselines_are_trained_by_ours_beside_sparsify(iso_cache, tiny_neox_dir, monkeypatch):
    """sparsify has no way to freeze a weight: with trainer: sparsify, Heap's frozen-weight baselines are trained
    by our trainer on the same stream (its TopK SAEs are never handed to sparsify), and the frozen part stays at
    its initialisation."""
    from saesanity import baselines
    from saesanity.sae.train import make_sae

    P = params.load("heap_metrics_vs_layer", "smoke", model=str(tiny_neox_dir), corpus="debian:fortunes",
                    layers=[1], kind="resid_post", d_sae=64, k=4, n_tokens=2048, batch_size=512, seq_len=64,
                    n_eval_tokens=1024, n_splice_tokens=128, variants=["trained"], trainer="sparsify",
                    frozen=["decoder", "encoder"])
    monkeypatch.setattr(st, "train_sparsify", lambda *a, **k: pytest.fail("sparsify asked to train a frozen SAE"))
    fz = baselines.frozen_saes(P, P.frozen, progress=False)["resid_post.1"]
    cfg = runs.train_cfg(baselines.view(P, "trained"), 0)
    init = make_sae(cfg, fz["decoder"].sae.W_dec.shape[1])
    torch.testing.assert_close(fz["decoder"].sae.W_dec, init.W_dec, rtol=0, atol=1e-6)
    assert not torch.allclose(fz["decoder"].sae.W_enc, init.W_enc)
    torch.testing.assert_close(fz["encoder"].sae.W_enc, init.W_enc, rtol=0, atol=0)
    assert not torch.allclose(fz["encoder"].sae.W_dec, init.W_dec, atol=1e-3)
    assert [t.cfg.freeze for t in fz.values()] == ["decoder", "encoder"]
    assert all(t.info.get("trainer") != "sparsify" for t in fz.values())
