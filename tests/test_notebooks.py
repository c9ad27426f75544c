"""Every notebook, executed by papermill on its `smoke` and `paper-mini` profiles, writes its figure and JSON.

`paper-mini` is the `paper` profile on local stand-ins (params.PAPER_MINI_KEYS): the paper's code paths —
streamed training, GPT-NeoX / GPT-2 stand-ins, `step0`, hub-layout corpora — run here, offline."""

import json
import os
import subprocess
import sys

import pytest

from saesanity import paths

STEMS = sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.ipynb"))
# keys the README and later notebooks read from each JSON
REQUIRED = {
    "heap_metrics_vs_layer": ["convergence.n_members", "ours", "frozen", "lookup_null", "claims", "scale", "setup"],
    "heap_toy_models": ["ours.hypothesis1", "ours.hypothesis2", "claims", "scale"],
    "autointerp_calibration": ["summary", "claims", "configs", "explanations", "scale"],
    "heap_figB_autointerp_roc": ["auroc", "auroc_bootstrap_sd", "claims", "config", "scale"],
    "paulo_fig3_interp_vs_sharing": ["mean_auroc_by_found", "compared", "spearman_found_vs_score", "claims", "pairs", "scale"],
    "paulo_table1_unpaired_explanations": ["ours", "paper", "claims", "score", "scale"],
    "leask_novel_fraction": ["convergence.n_members", "novel_fraction_seeds", "novel_fraction_at_theta", "novel_fraction_curve", "compared", "claims", "scale"],
    "leask_stitching": ["convergence.n_members", "insertion", "swap_path", "swap_path_summary", "claims", "scale"],
    "leask_meta_sae": ["meta", "examples", "claims", "scale"],
    "heap_token_entropy": ["ours.median_entropy_bits", "ours.median_entropy_bootstrap_sd", "ours.max_entropy_bits", "claims", "scale"],
    "paulo_fig1_matched_cosines": ["compared.shared_frac_paper.ours", "compared.shared_frac_paper.paper",
                                   "compared.agree_frac.ours", "compared.mean_matched_dec_cos.ours",
                                   "compared.mean_matched_enc_cos.ours", "heldout", "scale", "setup", "claims",
                                   "convergence.converged", "shared_frac_seed_pairs.sd"],
    "paulo_fig2_similarity_vs_frequency": ["convergence.converged", "n_seeds", "found_in_exactly_m", "compared.only_in_base_frac.ours",
                                           "compared.in_all_frac.ours", "spearman_logfreq_vs_similarity",
                                           "mean_similarity_by_count", "scale", "claims"],
    "paulo_figA1_power_law_offset": ["convergence.converged", "curve", "fits.power_offset.params.c", "fits.power.aic", "fits.exp_offset.bic",
                                     "preferred_fit", "offset_c.estimate", "offset_c.bootstrap.lo", "n_seeds", "claims"],
    "paulo_figA2_threshold_rules": ["convergence.converged", "compared.mean_alignment_agree.ours", "compared.mean_alignment_disagree.paper",
                                    "compared.shared_frac_paper_rule_at_0.7.ours", "max_minus_hungarian_at_0.7",
                                    "shared_frac_at_thresholds", "claims"],
    "paulo_fig5_overlap_vs_size_k_tokens": ["convergence.n_members", "ours.d_sae", "ours.k", "ours.n_tokens", "paper.d_sae",
                                            "spearman_shared_vs_axis", "paper_trend", "claims", "base_seed_pairs.sd"],
    "paulo_figA4_mean_cosines_vs_size_k_tokens": ["ours.d_sae", "ours.k", "ours.n_tokens",
                                                  "max_at_least_matched_everywhere", "claims"],
    "paulo_fig4_overlap_vs_layer_position_arch": ["seed_pairs.paper.sd", "ours.layers", "ours.architectures", "ours.edge_minus_middle_layers",
                                                  "ours.mlp_vs_resid", "paper.architectures_decoder_only_gpt2",
                                                  "scale", "claims"],
    "consistency_synthetic": ["true_l0", "rows", "scale", "claims"],
    "consistency_matryoshka": ["architectures.topk.shared_frac", "architectures.matryoshka.level_bands",
                               "architectures.matryoshka.frequency_bands", "pw_mcc_chance.mean", "bands", "scale",
                               "claims", "topk_seed_pairs.sd"],
    "leask_matryoshka": ["novel_mean.topk", "novel_mean.matryoshka", "novel.matryoshka", "prefix.matryoshka",
                         "prefix.topk", "meta.matryoshka", "meta.topk", "theta", "scale", "claims"],
    "consistency_seeds": ["data_nulls.real.shared_frac", "data_nulls.gaussian.pw_mcc_signed",
                          "data_nulls.shuffled.fvu", "pw_mcc_signed.mean", "pw_mcc_base_pairs", "pw_mcc_chance.absolute.mean",
                          "reappearance.spearman_vs_log_freq", "subspaces.mean_angle_random",
                          "stabilisation.pw_mcc_by_tokens", "stabilisation.aligned_at_start", "scale", "claims"],
    "paulo_figA3_hungarian_vs_max": ["convergence.converged", "frac_matched_to_nearest_neighbour", "frac_nearest_neighbour_among_agreeing",
                                     "mean_max_minus_matched_dec_cos", "scale", "claims"],
}


def _get(doc, dotted):
    """doc["a"]["b.c"]… for "a.b.c…": at each level take the longest key that prefixes the rest (keys may hold dots)."""
    rest = dotted
    while rest:
        key = max((k for k in doc if rest == k or rest.startswith(k + ".")), key=len, default=None)
        if key is None:
            raise KeyError(f"{rest!r} (in {dotted!r})")
        doc, rest = doc[key], rest[len(key) + 1:]
    return doc


@pytest.fixture(scope="session")
def profile_cache(tmp_path_factory):
    """One cache per profile for every notebook of the session, as `make figures` has one: notebooks that
    share SAEs (Fig. 1's family, Heap's variants, Leask's sizes) train them once, and the later ones run
    their cached path (each notebook still runs end to end)."""
    from conftest import linked_cache

    made: dict[str, object] = {}

    def get(profile: str):
        if profile not in made:
            made[profile] = linked_cache(tmp_path_factory.mktemp(f"cache-{profile}"))
        return made[profile]
    return get


@pytest.mark.notebook
@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("profile", ["smoke", "paper-mini"])
def test_notebook(profile, stem, profile_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SAESANITY_CACHE", str(profile_cache(profile)))
    monkeypatch.setenv("SAESANITY_FIGURES", str(tmp_path / "figures"))
    flat = tmp_path / "params.yaml"
    flat.write_text(subprocess.run([sys.executable, "-m", "saesanity.params", stem, profile], check=True,
                                   capture_output=True, text=True).stdout)
    out_nb = tmp_path / f"{stem}.ipynb"
    env = dict(os.environ, TQDM_DISABLE="1")
    run = subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "saesanity", "-f", str(flat),
                          "--cwd", str(paths.NOTEBOOKS_DIR), str(paths.NOTEBOOKS_DIR / f"{stem}.ipynb"), str(out_nb)],
                         env=env, capture_output=True, text=True)
    if run.returncode:
        pytest.fail(f"papermill {stem} [{profile}] exited {run.returncode}:\n{run.stderr[-4000:]}")
    import nbformat

    from saesanity.notebooks import absolute_paths, clean_executed, image_outputs

    clean_executed(out_nb)  # as `make figure` does before committing the executed notebook
    executed = nbformat.read(out_nb, as_version=4)
    assert image_outputs(executed) >= 1, f"{stem} [{profile}]: the executed notebook shows no figure"
    assert absolute_paths(executed) == [], f"{stem} [{profile}]: this machine's paths in the outputs"
    figs = tmp_path / "figures"
    for ext in ("png", "pdf", "json"):
        assert (figs / f"{stem}.{ext}").stat().st_size > 0
    doc = json.loads((figs / f"{stem}.json").read_text())
    from saesanity import plotting

    assert doc["profile"] == profile and doc["setup"] == plotting.setup_label(profile)
    if profile == "paper-mini":
        assert doc["setup"].startswith("paper-mini") and "not a result" in doc["setup"]
    for key in REQUIRED.get(stem, []):
        _get(doc, key)
    if stem == "paulo_fig4_overlap_vs_layer_position_arch":  # panel (b) has both kinds at every layer, also when
        # d_sae is not among layer_sizes (the paper's 27,648 and paper-mini's 192)
        assert doc["ours"]["mlp_vs_resid"]["n_layers"] == len(doc["params"]["layers"])
    if stem == "heap_metrics_vs_layer":  # the frozen baselines at every layer; the lookup null where rows are cached
        hooks = set(doc["ours"]["trained"])
        assert set(doc["frozen"]) == set(doc["params"]["frozen"]) and all(set(r) == hooks for r in doc["frozen"].values())
        streamed = doc["params"]["activations"] == "streamed"
        assert all((r is None) == streamed for hs in doc["lookup_null"].values() for r in hs.values())
    assert stem in REQUIRED, f"list the JSON keys {stem} must provide in REQUIRED"
    from saesanity import readme

    section = readme.SECTIONS[stem](doc)  # the README section renders from this JSON
    assert f"figures/{stem}.png" in section and profile in section



@pytest.mark.notebook
def test_papermill_given_a_mistyped_parameter_fails_naming_it(tmp_path):
    """`papermill -p d_sea 64` only warns ("Passed unknown parameter") and runs on the file's d_sae; our
    notebooks stop at their first cell after the parameters, naming the parameter they do not have."""
    stem = "heap_toy_models"
    flat = tmp_path / "params.yaml"
    flat.write_text(subprocess.run([sys.executable, "-m", "saesanity.params", stem, "smoke"], check=True,
                                   capture_output=True, text=True).stdout)
    run = subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "saesanity", "-f", str(flat),
                          "-p", "n_featurs", "64", "--cwd", str(paths.NOTEBOOKS_DIR),
                          str(paths.NOTEBOOKS_DIR / f"{stem}.ipynb"), str(tmp_path / "out.ipynb")],
                         env=dict(os.environ, SAESANITY_FIGURES=str(tmp_path / "figures")),
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert "unknown parameter(s) ['n_featurs']" in run.stderr and "did you mean 'n_features'" in run.stderr
    assert not (tmp_path / "figures").exists()
