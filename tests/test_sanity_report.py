"""`saesanity report`: the bootstrap interval, the command end to end on the smoke profile (trained seeds
and a given SAE in another library's format), resuming from the cache, and clear errors on bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from saesanity import cli
from saesanity.sanity import ReportConfig, ReportError, bootstrap_interval


def test_bootstrap_interval_of_a_mask_matches_explicit_resampling():
    rng = np.random.default_rng(0)
    mask = rng.random(3000) < 0.3
    lo, hi = bootstrap_interval(mask, n_boot=4000, seed=1)
    explicit = mask[rng.integers(0, mask.size, size=(4000, mask.size))].mean(1)
    e_lo, e_hi = np.quantile(explicit, [0.025, 0.975])
    assert lo < mask.mean() < hi
    assert abs(lo - e_lo) < 0.004 and abs(hi - e_hi) < 0.004
    se = np.sqrt(mask.mean() * (1 - mask.mean()) / mask.size)  # the normal approximation's half-width
    assert abs((hi - lo) / 2 - 1.96 * se) < 0.003
    assert bootstrap_interval(np.ones(50, bool)) == (1.0, 1.0)
    vals = rng.random(400)  # a non-0/1 input takes the explicit path
    v_lo, v_hi = bootstrap_interval(vals, n_boot=2000)
    assert v_lo < vals.mean() < v_hi and abs((v_hi - v_lo) / 2 - 1.96 * vals.std() / 20) < 0.005
    with pytest.raises(ReportError, match="empty"):
        bootstrap_interval(np.zeros(0))


def _report(tmp_path, *extra) -> dict:
    out = tmp_path / "report"
    rc = cli.main(["report", "--profile", "smoke", "--hookpoint", "mlp_out.2", "--out", str(out), "--no-progress",
                   *extra])
    assert rc == 0
    return json.loads((out / "report.json").read_text())


@pytest.mark.notebook
def test_report_smoke_end_to_end_and_resumes(iso_cache, tmp_path, monkeypatch):
    r = _report(tmp_path)
    out = tmp_path / "report"
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "report.json", "stability.png",
                                              "baseline.png"}
    assert [s["name"] for s in r["saes"]] == ["seed0", "seed1"]
    (pair,) = r["stability"]["pairs"]
    assert set(pair["rules"]) == {"paper", "dec_and_enc", "decoder_only", "max_cosine"}
    for v in pair["rules"].values():
        assert v["ci_low"] <= v["shared_frac"] <= v["ci_high"]
    # a stricter rule never shares more
    assert pair["rules"]["paper"]["shared_frac"] <= pair["rules"]["dec_and_enc"]["shared_frac"] \
        <= pair["rules"]["decoder_only"]["shared_frac"]
    assert list(r["baseline"]) == ["trained", "rerandomized_incl_emb", "control"]
    assert r["baseline"]["trained"] == r["recon"]["seed0"]  # the trained-model baseline SAE is seed 0
    for m in [*r["recon"].values(), *r["baseline"].values()]:
        assert 0 < m["fvu"] < 1.5 and m["l0"] <= 8 + 1e-6 and np.isfinite(m["ce_loss_score"])
    for m in [*r["recon"].values(), *r["baseline"].values()]:  # the noise floor over 5 held-out shards
        assert m["fvu_shard_sd"] > 0 and m["l0_shard_sd"] >= 0
    assert list(r["frozen"]) == ["decoder", "soft_decoder", "encoder"]
    for m in r["frozen"].values():
        assert 0 < m["fvu"] < 2 and m["l0"] <= 8 + 1e-6 and np.isfinite(m["kl_score"])
    assert len({m["fvu"] for m in r["frozen"].values()}) == 3  # three different SAEs
    lk = r["lookup_null"]
    assert lk["n_train_rows"] == r["activation_rows"]["train"] and 0 < lk["unigram_fvu"] < 2 and 0 < lk["bigram_fvu"] < 2
    assert lk["unigram_fvu_shard_sd"] > 0 and lk["bigram_fvu_shard_sd"] > 0 and set(lk["lambdas"]) == {"unigram", "bigram"}
    c = r["controls"]["step0"]  # the seeds trained here start unaligned: different random initialisations
    assert c["aligned_at_start"] is False and abs(c["step0_pw_mcc"] - c["chance_pw_mcc"]) < 0.1
    assert c["chance_pw_mcc"] == pair["chance_pw_mcc_signed"] and "reappearance" not in r["controls"]  # 2 SAEs
    assert list(r["data_nulls"]) == ["gaussian", "shuffled"]  # the same seed pair on each data null
    for p in r["data_nulls"].values():
        assert (p["a"], p["b"]) == ("seed0", "seed1") and set(p["rules"]) == set(pair["rules"])
        assert 0 <= p["rules"]["paper"]["shared_frac"] <= 1 and p["fvu"] > 0
        assert p["n_latents_a"] == pair["n_latents_a"]
    assert r["data_nulls"]["gaussian"]["mean_matched_dec_cos"] != r["data_nulls"]["shuffled"]["mean_matched_dec_cos"]
    md = (out / "report.md").read_text()
    assert "| seed0 vs seed1 on Gaussian (same mean, covariance) data (null) |" in md
    assert f"{r['recon']['seed0']['fvu']:.3f} ± {r['recon']['seed0']['fvu_shard_sd']:.3f}" in md
    assert "## Frozen and lookup baselines" in md and "| frozen random decoder |" in md and "| bigram lookup null |" in md
    assert f"| token lookup null | {lk['unigram_fvu']:.3f} ± {lk['unigram_fvu_shard_sd']:.3f} |" in md
    assert "smoke model" in md and "| seed0 vs seed1 |" in md and "Paulo & Belrose" in md
    assert "<table>" in (out / "report.html").read_text()

    # a second run trains and matches nothing and adds no artifact: every step comes from the cache
    import saesanity.runs as runs_mod

    def artifacts():
        return sorted(f"{d.name}/{a.name}" for d in iso_cache.iterdir() if d.is_dir() and not d.is_symlink()
                      for a in d.iterdir())
    before = artifacts()

    def fail(*a, **k):
        raise AssertionError("recomputed a cached step")
    monkeypatch.setattr(runs_mod, "train_family", fail)
    monkeypatch.setattr(runs_mod, "match_pair", fail)
    assert _report(tmp_path) == r
    assert artifacts() == before


@pytest.mark.notebook
def test_report_interrupted_resumes_from_cache(iso_cache, tmp_path, monkeypatch):
    """Killed while training the seeds (one family, one pass): the rerun keeps the activations and trains the
    seeds again, then only the baselines."""
    import saesanity.runs as runs_mod

    real = runs_mod.train_family
    trained = []

    def dying(source, cfgs, **kw):
        trained.append(sorted(c.seed for c in cfgs))
        if trained.count([0, 1]) == 1 and len(cfgs) == 2:
            raise KeyboardInterrupt
        return real(source, cfgs, **kw)
    monkeypatch.setattr(runs_mod, "train_family", dying)
    with pytest.raises(KeyboardInterrupt):
        _report(tmp_path)
    assert trained == [[0, 1]]
    acts_before = {p.name for p in (iso_cache / "activations").iterdir() if not p.name.endswith(".partial")}
    assert acts_before
    _report(tmp_path)
    assert trained[:2] == [[0, 1], [0, 1]]
    assert trained[2:4] == [[0, 1], [0, 1]]  # then the seed pair on each data null (gaussian, shuffled)
    assert trained[-1] == [0, 0, 0]  # and the three frozen-weight baselines (seed 0), one pass
    assert all(t == [0] for t in trained[4:-1])  # between them the baseline variants' SAEs (seed 0, other activations)
    assert acts_before <= {p.name for p in (iso_cache / "activations").iterdir()}  # the seeds' activations were kept


@pytest.mark.notebook
def test_report_on_a_given_sparsify_sae(iso_cache, tmp_path):
    """A given SAE (eai-sparsify's own files) is checked against one seed trained here, with its own size and k."""
    from sparsify import SparseCoder, SparseCoderConfig

    import torch

    torch.manual_seed(0)
    SparseCoder(64, SparseCoderConfig(num_latents=128, k=6)).save_to_disk(tmp_path / "mine" / "layers.2")
    r = _report(tmp_path, "--sae", str(tmp_path / "mine"), "--variants", "trained", "--frozen", "--no-lookup-null")
    assert r["frozen"] == {} and r["lookup_null"] is None  # both baselines switched off
    assert r["data_nulls"] == {}  # one seed trained here: no pair of its own to put the nulls beside
    assert [(s["name"], s["d_sae"], s["k"]) for s in r["saes"]] == [("layers.2", 128, 6), ("seed0", 128, 6)]
    assert [(p["a"], p["b"]) for p in r["stability"]["pairs"]] == [("layers.2", "seed0")]
    assert set(r["recon"]) == {"layers.2", "seed0"} and list(r["baseline"]) == ["trained"]


@pytest.mark.notebook
def test_report_with_three_seeds_gives_reappearance(iso_cache, tmp_path):
    r = _report(tmp_path, "--train-seeds", "3", "--variants", "trained", "--frozen", "--no-lookup-null", "--data-nulls")
    assert r["data_nulls"] == {}  # --data-nulls alone: none
    re = r["controls"]["reappearance"]
    assert (re["sae"], re["n_saes"]) == ("seed0", 3) and 0 <= re["never_frac"] <= 1 - re["always_frac"] <= 1
    shared = [p["rules"]["paper"]["shared_frac"] for p in r["stability"]["pairs"] if p["a"] == "seed0"]
    assert re["mean"] == pytest.approx(np.mean(shared))  # seed 0's mean reappearance is its mean shared fraction
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Consistency controls" in md and "reappearance of seed0's latents in the 2 other SAEs" in md


@pytest.mark.notebook
def test_report_on_given_matryoshka_saes_has_their_levels(iso_cache, tmp_path):
    """Two dictionary_learning Matryoshka SAEs (group sizes 16, 48, 64; the second a copy of the first with per-latent noise):
    the report reads their levels, scores each prefix, and splits the pair's sharing by level and by frequency band;
    each split's size-weighted mean is the pair's shared fraction under the paper's rule (bands partition A's
    latents), and the last level's FVU is the reconstruction table's."""
    import importlib.util
    import sys
    import types

    import torch

    if "dictionary_learning" not in sys.modules:  # without the package's __init__ (it pulls nnsight)
        pkg = types.ModuleType("dictionary_learning")
        pkg.__path__ = list(importlib.util.find_spec("dictionary_learning").submodule_search_locations)
        sys.modules["dictionary_learning"] = pkg
    from dictionary_learning.trainers.matryoshka_batch_top_k import MatryoshkaBatchTopKSAE

    torch.manual_seed(0)
    ae = MatryoshkaBatchTopKSAE(64, 128, 6, group_sizes=[16, 48, 64])
    ae.threshold.fill_(0.01)
    scale = torch.linspace(0, 0.3, 128)[torch.randperm(128)]  # per-latent noise: cos ≈ (1 + 64 s²)^-1/2
    for name, noise in (("a", 0.0), ("b", 1.0)):
        st = {k: v.clone() for k, v in ae.state_dict().items()}
        st["W_dec"] += noise * scale[:, None] * torch.randn_like(st["W_dec"])
        st["W_enc"] += noise * scale[None, :] * torch.randn_like(st["W_enc"])
        copy = st
        (tmp_path / name).mkdir()
        torch.save(copy, tmp_path / name / "ae.pt")
        (tmp_path / name / "config.json").write_text(json.dumps({"trainer": {"dict_class": "MatryoshkaBatchTopKSAE"}}))
    r = _report(tmp_path, "--sae", str(tmp_path / "a"), "--sae", str(tmp_path / "b"), "--train-seeds", "0",
                "--variants", "trained", "--frozen", "--no-lookup-null")
    lv = r["levels"]
    assert list(lv["saes"]) == [s["name"] for s in r["saes"][:2]] and len(r["saes"]) == 2
    a, b = list(lv["saes"])
    assert [e["width"] for e in lv["saes"][a]["levels"]] == [16, 64, 128] == lv["saes"][a]["widths"]
    assert lv["saes"][a]["levels"][-1]["fvu"] == pytest.approx(r["recon"][a]["fvu"], rel=1e-5)
    # the full level's noise floor is the reconstruction table's: the same held-out shards
    assert lv["saes"][a]["levels"][-1]["fvu_shard_sd"] == pytest.approx(r["recon"][a]["fvu_shard_sd"], rel=1e-4)
    assert all(e["fvu_shard_sd"] > 0 for e in lv["saes"][a]["levels"])
    (pair,) = lv["pairs"]
    assert (pair["a"], pair["b"], pair["bands"]) == (a, b, [[0, 16], [16, 64], [64, 128]])
    shared = next(p for p in r["stability"]["pairs"] if (p["a"], p["b"]) == (a, b))["rules"]["paper"]["shared_frac"]
    assert 0 < shared < 1  # the perturbation keeps some latents and loses others
    for split in ("level_bands", "frequency_bands"):
        assert np.dot(pair[split], [16, 48, 64]) / 128 == pytest.approx(shared)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Matryoshka levels" in md and f"{a} vs {b}" in md and "16–64" in md
    levels_md = md.split("## Matryoshka levels")[1].split("\n## ")[0]
    assert " ± " in levels_md and "shards of the held-out rows" in levels_md


def test_an_unknown_frozen_baseline_is_a_report_error():
    with pytest.raises(ReportError, match=r"frozen baselines \['bias'\]"):
        ReportConfig.from_profile("smoke", model="smollm2-tiny-random", hookpoint="mlp_out.2", frozen=["bias"])


def test_an_unknown_data_null_is_a_report_error():
    with pytest.raises(ReportError, match=r"data nulls \['uniform'\]"):
        ReportConfig.from_profile("smoke", model="smollm2-tiny-random", hookpoint="mlp_out.2", data_nulls=["uniform"])
    assert ReportConfig.from_profile("smoke", model="smollm2-tiny-random", hookpoint="mlp_out.2",
                                     data_nulls=[]).data_nulls == []  # --data-nulls alone: none


def test_the_report_resolves_auto_precision_for_this_machine_and_rejects_an_unknown_dtype(monkeypatch):
    from saesanity import machine

    for fast, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(machine, "bf16_fast", lambda device="cpu", fast=fast: fast)
        assert ReportConfig.from_profile("default", model="smollm2-tiny-random", hookpoint="mlp_out.2").model_dtype == want
    with pytest.raises(ReportError, match=r"model-dtype='fp8'; valid: \['auto', 'float32'"):
        ReportConfig.from_profile("smoke", model="smollm2-tiny-random", hookpoint="mlp_out.2", model_dtype="fp8")


def test_an_unknown_profile_is_a_report_error():  # the CLI's bad inputs: tests/test_bad_inputs.py
    with pytest.raises(ReportError, match="profile 'huge'"):
        ReportConfig.from_profile("huge", hookpoint="mlp_out.2")


@pytest.mark.notebook
def test_report_rejects_an_sae_of_another_width(iso_cache, tmp_path, capsys):
    from saesanity.sae import TopKSAE, save_saelens

    save_saelens(TopKSAE(32, 64, 4, seed=0), tmp_path / "wrong")
    rc = cli.main(["report", "--profile", "smoke", "--hookpoint", "mlp_out.2", "--out", str(tmp_path / "r"),
                   "--no-progress", "--sae", str(tmp_path / "wrong")])
    assert rc == 2
    assert "has d_in=32, but mlp_out.2 of smollm2-tiny-random has d_model=64" in capsys.readouterr().err


def test_module_and_console_script_entry_points():
    res = subprocess.run([sys.executable, "-m", "saesanity", "report", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--train-seeds" in res.stdout and "sae_lens:<release>:<sae_id>" in res.stdout
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "saesanity"]
    assert ep.value == "saesanity.cli:main"
    script = Path(sys.executable).with_name("saesanity")  # the installed console script runs the same parser
    res = subprocess.run([str(script), "report", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--train-seeds" in res.stdout


@pytest.mark.notebook
def test_report_with_auto_interp(iso_cache, tmp_path):
    """`--explainer` adds pooled AUROCs per scorer (here the model-free top-tokens explainer and the MiniLM
    embedding scorer) for each baseline SAE."""
    r = _report(tmp_path, "--variants", "trained", "control", "--explainer", "top-tokens", "--scorers", "embedding",
                "--n-interp-latents", "3", "--train-seeds", "1")
    ai = r["autointerp"]
    assert "top-tokens" in ai["config"] and set(ai["saes"]) == {"trained", "control"}
    for res in ai["saes"].values():
        assert 1 <= res["n_latents"] <= 3
        assert isinstance(res["embedding"], float) and 0.0 <= res["embedding"] <= 1.0  # both classes were scored
    assert "## Auto-interp" in (tmp_path / "report" / "report.md").read_text()


def test_an_unwritable_out_is_refused_before_any_compute(tmp_path, capsys, monkeypatch):
    import saesanity.sanity as sanity

    monkeypatch.setattr(sanity, "run", lambda *a, **k: pytest.fail("ran before checking --out"))
    (tmp_path / "afile").write_text("x")
    base = ["report", "--profile", "smoke", "--hookpoint", "mlp_out.2", "--no-progress"]
    assert cli.main([*base, "--out", str(tmp_path / "afile")]) == 2
    assert f"--out {tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot be written" in capsys.readouterr().err
