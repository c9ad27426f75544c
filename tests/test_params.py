import subprocess
import sys

import nbformat
import pytest
import yaml

from saesanity import params
from saesanity.paths import NOTEBOOKS_DIR, PARAMS_DIR

STEMS = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("stem", STEMS)
@pytest.mark.parametrize("profile", params.PROFILES)
def test_every_profile_validates(stem, profile):
    P = params.load(stem, profile)
    assert P.profile == profile


@pytest.mark.parametrize("stem", STEMS)
def test_parameters_cell_equals_default_profile(stem):
    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1 and nb.cells.index(cells[0]) <= 2, "one `parameters` cell, near the top"
    ns: dict = {}
    exec(cells[0].source, ns)
    ns = {k: v for k, v in ns.items() if not k.startswith("__")}
    assert ns == params.profile_values(stem, "default")
    assert cells[0].source == params.parameters_cell(stem), \
        f"stale parameters cell: run python -m saesanity.params cell {stem}"


@pytest.mark.parametrize("stem", STEMS)
def test_papermill_reads_every_parameter_of_the_cell(stem):
    """papermill skips a parameters-cell line with a second '=' (in its comment): such a parameter vanished from
    `papermill --help-notebook` and drew "Passed unknown parameter" when given."""
    import dataclasses

    import papermill

    got = papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{stem}.ipynb"))
    assert set(got) == {f.name for f in dataclasses.fields(params.params_class(stem))}
    assert all(got[n]["help"] for n in got), "each parameter's documentation is its help line"


def test_parameter_documentation_may_not_hold_an_equals_sign():
    with pytest.raises(ValueError, match="may not contain '='"):
        params.param("n_features / d = superposition", 1)


def test_a_parameter_papermill_was_given_that_the_notebook_lacks_is_an_error():
    stem = "paulo_fig1_matched_cosines"
    ns = dict(params.profile_values(stem, "smoke"))
    injected = "# Parameters\nd_sea = 64\nseeds = [0, 1]\n"
    with pytest.raises(params.ParamsError, match=r"unknown parameter\(s\) \['d_sea'\]; 'd_sea': did you mean 'd_sae'"):
        params.from_namespace(stem, {**ns, "_ih": ["", "import x", injected, "P = ..."]})
    good = "# Parameters\nd_sae = 64\n"
    assert params.from_namespace(stem, {**ns, "d_sae": 64, "_ih": ["", good]}).d_sae == 64
    assert params.from_namespace(stem, ns).d_sae == ns["d_sae"]  # run by hand: no injected cell, no check


@pytest.mark.parametrize("stem", STEMS)
def test_source_notebooks_have_no_outputs(stem):
    nb = nbformat.read(NOTEBOOKS_DIR / f"{stem}.ipynb", as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")


def test_unknown_key_rejected(tmp_path):
    (tmp_path / "paulo_fig1_matched_cosines.yaml").write_text(
        yaml.safe_dump({"default": {**params.profile_values("paulo_fig1_matched_cosines", "default"), "k_typo": 3}}))
    with pytest.raises(params.ParamsError, match=r"unknown parameter\(s\) \['k_typo'\]"):
        params.load("paulo_fig1_matched_cosines", "default", params_dir=tmp_path)


def test_unknown_profile_rejected():
    with pytest.raises(params.ParamsError, match="unknown profile 'fast'"):
        params.load("paulo_fig1_matched_cosines", "fast")


def test_unknown_profile_section_rejected(tmp_path):
    (tmp_path / "paulo_fig1_matched_cosines.yaml").write_text("default: {}\nquick: {}\n")
    with pytest.raises(params.ParamsError, match=r"unknown profile\(s\) \['quick'\]"):
        params.read_profiles("paulo_fig1_matched_cosines", tmp_path)


def test_wrong_type_and_conflicts_rejected():
    with pytest.raises(params.ParamsError, match="parameter k='many'"):
        params.load("paulo_fig1_matched_cosines", k="many")
    with pytest.raises(params.ParamsError, match="k=5000: must satisfy 0 < k < d_sae=4608"):
        params.load("paulo_fig1_matched_cosines", k=5000)
    with pytest.raises(params.ParamsError, match="two distinct seeds"):
        params.load("paulo_fig1_matched_cosines", seeds=[3, 3])


def test_unknown_stem_rejected():
    with pytest.raises(params.ParamsError, match="no parameter schema"):
        params.params_class("nope")


def test_cli_writes_flat_profile():
    out = subprocess.run([sys.executable, "-m", "saesanity.params", "paulo_fig1_matched_cosines", "smoke"],
                         capture_output=True, text=True, check=True).stdout
    flat = yaml.safe_load(out)
    assert flat["profile"] == "smoke" and flat["model"] == "smollm2-tiny-random"
    assert set(flat) == set(params.profile_values("paulo_fig1_matched_cosines", "default"))


@pytest.mark.parametrize("profile", params.PROFILES)
def test_seed_family_shares_fig1_activations_and_sae_config(profile):
    """Fig. 2, A1, A2, A3 must name the same activations and SAE settings as Fig. 1 so they reuse its SAEs."""
    shared_keys = ["model", "variant", "corpus", "hookpoint", "n_tokens", "seq_len", "data_seed", "d_sae", "k",
                   "batch_size", "lr", "auxk_alpha", "n_eval_tokens"]
    ref = params.profile_values("paulo_fig1_matched_cosines", profile)
    for stem in params.SEED_FAMILY:
        vals = params.profile_values(stem, profile)
        assert {k: vals[k] for k in shared_keys} == {k: ref[k] for k in shared_keys}, stem
        assert vals["seeds"][:2] == ref["seeds"][:2], stem


def test_executed_notebook_streams_lose_timing():
    from saesanity.notebooks import _collapse_carriage_returns

    raw = "SAE seed 0:  10%|#  | 1/10 [00:01<00:09, 1.1step/s]\rSAE seed 0: 100%|###| 10/10 [00:10<00:00, 1.0step/s]\ndone"
    assert _collapse_carriage_returns(raw) == "SAE seed 0: 100%|###| 10/10\ndone"


@pytest.mark.parametrize("profile", params.PROFILES)
def test_autointerp_notebooks_share_the_sae_settings_they_reuse(profile):
    """Heap App. B must name heap_metrics_vs_layer's SAEs; Paulo Table 1 must score Fig. 3's pairs."""
    import dataclasses

    heap = params.profile_values("heap_metrics_vs_layer", profile)
    roc = params.profile_values("heap_figB_autointerp_roc", profile)
    sae_keys = [f.name for f in dataclasses.fields(params.VariantSweepParams)]
    assert {k: roc[k] for k in sae_keys} == {k: heap[k] for k in sae_keys}


def test_autointerp_params_reject_bad_values():
    with pytest.raises(params.ParamsError, match="interp_layers"):
        params.load("heap_figB_autointerp_roc", "smoke", interp_layers=[1])
    with pytest.raises(params.ParamsError, match="explainer='gpt4'"):
        params.load("paulo_fig3_interp_vs_sharing", "smoke", explainer="gpt4")
    with pytest.raises(params.ParamsError, match="needs api_base"):
        params.load("autointerp_calibration", "smoke", llm_backend="openai-compatible")
    with pytest.raises(params.ParamsError, match="rule 'colour:red'"):
        params.load("autointerp_calibration", "smoke", rules=["colour:red"])


@pytest.mark.parametrize("profile", ["smoke", "default"])
def test_leask_notebooks_reuse_fig5_saes(profile):
    """Offline, the Leask size family is Fig. 5's size sweep (seed 0): same activations and SAE settings."""
    shared = ["model", "variant", "corpus", "hookpoint", "n_tokens", "seq_len", "data_seed", "k", "batch_size", "lr",
              "auxk_alpha", "n_eval_tokens", "model_dtype"]
    fig5 = params.profile_values("paulo_fig5_overlap_vs_size_k_tokens", profile)
    for stem in ("leask_novel_fraction", "leask_stitching", "leask_meta_sae"):
        vals = params.profile_values(stem, profile)
        assert {k: vals[k] for k in shared} == {k: fig5[k] for k in shared}, stem
        assert vals["seeds"][0] == fig5["seeds"][0]
        if profile == "default":  # every size already trained by Fig. 5
            assert set(vals["sizes"]) <= set(fig5["sizes"]) | {fig5["d_sae"]}


def test_leask_params_reject_bad_values():
    with pytest.raises(params.ParamsError, match="ascending"):
        params.load("leask_stitching", "smoke", sizes=[128, 64])
    with pytest.raises(params.ParamsError, match="must contain"):
        params.load("leask_stitching", "smoke", release="some-release", release_id="no-size-here")


# ---------------------------------------------------------------- paper-mini: the paper profile, shrunk

def test_paper_mini_overlays_the_paper_profile(tmp_path):
    """paper-mini = default ∪ paper ∪ paper-mini; the other profiles overlay default alone."""
    stem = "paulo_fig1_matched_cosines"
    default = params.profile_values(stem, "default")
    (tmp_path / f"{stem}.yaml").write_text(yaml.safe_dump({
        "default": default, "smoke": {"lr": 0.5}, "paper": {"k": 16, "lr": 0.25}, "paper-mini": {"d_sae": 64}}))
    mini = params.load(stem, "paper-mini", params_dir=tmp_path)
    assert (mini.k, mini.lr, mini.d_sae, mini.profile) == (16, 0.25, 64, "paper-mini")
    smoke = params.load(stem, "smoke", params_dir=tmp_path)
    assert (smoke.k, smoke.lr, smoke.d_sae) == (default["k"], 0.5, default["d_sae"])


@pytest.mark.parametrize("stem", STEMS)
def test_paper_mini_differs_from_paper_only_in_allowed_keys(stem):
    """paper-mini may change where the model, text and hardware come from, and sizes (params.PAPER_MINI_KEYS);
    every other setting is the paper profile's, so paper-mini cannot drift from paper."""
    from saesanity import corpus, models

    section = params.read_profiles(stem)["paper-mini"]
    assert "profile" not in section
    bad = sorted(set(section) - set(params.PAPER_MINI_KEYS))
    assert not bad, f"{stem}: paper-mini sets {bad}, which must stay the paper profile's"
    paper, mini = params.profile_values(stem, "paper"), params.profile_values(stem, "paper-mini")
    changed = {k for k in paper if paper[k] != mini[k]} - {"profile"}
    assert changed <= set(params.PAPER_MINI_KEYS)
    for k in changed:
        kind = params.PAPER_MINI_KEYS[k]
        if kind == "size":  # counts shrink
            assert mini[k] <= paper[k], (stem, k, mini[k], paper[k])
        elif kind == "scaled list":  # a sweep of sizes: no more points, none larger
            assert 0 < len(mini[k]) <= len(paper[k]) and max(mini[k]) <= max(paper[k]), (stem, k)
        elif kind == "subset":  # some of the paper's values
            assert mini[k] and set(mini[k]) <= set(paper[k]), (stem, k, mini[k], paper[k])
    assert mini.get("device", "cpu") == "cpu"
    if "model" in paper:  # the stand-in of the paper's model: its architecture, or SmolLM2's tiny random Llama
        want = (models.TINY if paper["model"] in (models.SMOLLM2, models.TINY)
                else models.STANDIN_PREFIX + paper["model"])
        assert mini["model"] == want, stem
    if "corpus" in paper:  # the stand-in of the paper's corpus (local text stays)
        spec = corpus.parse_corpus(mini["corpus"])
        if paper["corpus"].startswith("hf:"):
            assert spec.standin and corpus.STANDIN_CORPORA[spec.standin].stands_for == paper["corpus"], stem
        else:
            assert mini["corpus"] == paper["corpus"], stem
    for k in ("llm_backend", "llm_model"):  # a served chat model becomes the tiny one in process
        if k in changed:
            assert paper["llm_backend"] == "openai-compatible" and mini["llm_backend"] == "hf-local", stem
    if "release" in changed:
        assert mini["release"] == "" and mini["release_id"] == "", stem


# ---------------------------------------------------------------- composition: groups, class defaults, same_as

@pytest.mark.parametrize("fast", [True, False])
def test_auto_precision_is_resolved_for_this_machine_when_the_parameters_are_built(monkeypatch, fast):
    from saesanity import machine

    monkeypatch.setattr(machine, "bf16_fast", lambda device="cpu": fast)
    for stem in ("paulo_fig1_matched_cosines", "heap_metrics_vs_layer", "leask_stitching"):
        assert params.profile_values(stem, "default")["sae_autocast"] == "auto"  # what the file says
        P = params.load(stem, "default")
        assert (P.model_dtype, P.sae_autocast) == (("bfloat16", "bf16") if fast else ("float32", "none"))
        assert params.load(stem, "default", sae_autocast="none", model_dtype="float16").model_dtype == "float16"
    S = params.load("heap_figB_autointerp_roc", "default", llm_dtype="auto")  # the file says float32
    assert S.llm_dtype == ("bfloat16" if fast else "float32")
    assert params.load("paulo_fig1_matched_cosines", "smoke").sae_autocast == "none"  # explicit: kept


def test_enumerations_match_the_registries_they_name():
    import typing

    from saesanity.activations import HOOK_KINDS
    from saesanity.autointerp import explainers, scorers
    from saesanity.autointerp.pipeline import BACKENDS
    from saesanity.baselines import FROZEN
    from saesanity.models import DTYPES, VARIANTS
    from saesanity.sae.arch import ARCHITECTURES

    for lit, registry in [(params.Dtype, DTYPES), (params.Variant, VARIANTS), (params.HookKind, HOOK_KINDS),
                          (params.Architecture, ARCHITECTURES), (params.Explainer, explainers.EXPLAINERS),
                          (params.Backend, BACKENDS), (params.Scorer, scorers.SCORERS),
                          (params.FrozenPart, FROZEN)]:
        names = [n for n in typing.get_args(lit) if not (lit is params.Dtype and n == "auto")]  # auto: resolved
        assert names == list(registry)
    with pytest.raises(params.ParamsError, match=r"variant='trainde'.*valid: \['trained'"):
        params.load("paulo_fig1_matched_cosines", "smoke", variant="trainde")
    with pytest.raises(params.ParamsError, match=r"kinds=\['mlp'\].*valid: \['resid_pre'"):
        params.load("paulo_fig4_overlap_vs_layer_position_arch", "smoke", kinds=["mlp"])


@pytest.mark.parametrize("stem", STEMS)
def test_every_field_is_documented_once(stem):
    import dataclasses

    fields = dataclasses.fields(params.params_class(stem))
    assert all(f.metadata.get("doc") for f in fields), [f.name for f in fields if not f.metadata.get("doc")]
    assert len({f.name for f in fields}) == len(fields)


def test_a_class_default_fills_what_the_file_leaves_out_and_a_required_field_must_be_given(tmp_path):
    stem = "paulo_fig1_matched_cosines"
    (tmp_path / f"{stem}.yaml").write_text(yaml.safe_dump({"default": {
        "model": "smollm2-tiny-random", "corpus": "debian", "hookpoint": "mlp_out.2", "n_tokens": 2048,
        "n_eval_tokens": 512, "d_sae": 64, "k": 4, "batch_size": 256, "lr": 0.01, "seeds": [0, 1]}}))
    P = params.load(stem, params_dir=tmp_path)
    assert (P.device, P.trainer, P.activations, P.threshold, P.seq_len, P.sparsify_overrides) == \
        ("cpu", "ours", "cached", 0.7, 256, {})
    (tmp_path / f"{stem}.yaml").write_text(yaml.safe_dump({"default": {"model": "smollm2-tiny-random"}}))
    with pytest.raises(params.ParamsError, match=r"missing parameter\(s\) \['corpus', 'n_eval_tokens'"):
        params.load(stem, params_dir=tmp_path)


def test_same_as_overlays_each_section_key_by_key_through_a_chain(tmp_path):
    stem_a, stem_b, stem_c = "paulo_fig1_matched_cosines", "paulo_fig2_similarity_vs_frequency", "paulo_figA1_power_law_offset"
    base = {k: v for k, v in params.read_profiles(stem_a)["default"].items()}
    (tmp_path / f"{stem_a}.yaml").write_text(yaml.safe_dump({"default": base, "smoke": {"lr": 0.5, "k": 8}}))
    (tmp_path / f"{stem_b}.yaml").write_text(yaml.safe_dump({"same_as": stem_a, "default": {"seeds": [0, 1, 2, 3, 4]},
                                                             "smoke": {"k": 4}}))
    (tmp_path / f"{stem_c}.yaml").write_text(yaml.safe_dump({"same_as": stem_b, "default": {"n_boot": 5, "max_draws": 9}}))
    smoke = params.load(stem_c, "smoke", params_dir=tmp_path)
    assert (smoke.lr, smoke.k, smoke.seeds, smoke.n_boot) == (0.5, 4, [0, 1, 2, 3, 4], 5)
    assert params.load(stem_c, params_dir=tmp_path).k == base["k"]
    (tmp_path / f"{stem_a}.yaml").write_text(yaml.safe_dump({"same_as": stem_c}))
    with pytest.raises(params.ParamsError, match="without a cycle"):
        params.read_profiles(stem_c, tmp_path)
    (tmp_path / f"{stem_a}.yaml").write_text(yaml.safe_dump({"same_as": "no_such_notebook", "default": {}}))
    with pytest.raises(params.ParamsError, match="no parameter file .*no_such_notebook.yaml"):
        params.read_profiles(stem_a, tmp_path)


@pytest.mark.parametrize("stem,parent", [
    ("heap_token_entropy", "heap_metrics_vs_layer"), ("heap_figB_autointerp_roc", "heap_metrics_vs_layer"),
    ("leask_novel_fraction", "leask_stitching"), ("leask_meta_sae", "leask_stitching"),
    ("paulo_table1_unpaired_explanations", "paulo_fig3_interp_vs_sharing"),
    ("paulo_figA4_mean_cosines_vs_size_k_tokens", "paulo_fig5_overlap_vs_size_k_tokens")])
def test_notebooks_that_read_one_anothers_artifacts_share_one_file(stem, parent):
    """These read the artifacts another notebook makes: their file is `same_as` it, so they cannot drift."""
    assert yaml.safe_load((PARAMS_DIR / f"{stem}.yaml").read_text())["same_as"] == parent
    shared = set(params.profile_values(parent, "default")) & set(params.profile_values(stem, "default"))
    assert {"model", "variants", "layers", "n_tokens", "sizes", "seeds"} & shared  # (the keys naming the artifacts)
    for profile in params.PROFILES:
        vals, ref = params.profile_values(stem, profile), params.profile_values(parent, profile)
        assert {k: vals[k] for k in shared} == {k: ref[k] for k in shared}, (stem, profile)


def test_help_lists_each_parameter_with_its_values_and_meaning():
    out = subprocess.run([sys.executable, "-m", "saesanity.params", "--help", "heap_metrics_vs_layer"],
                         capture_output=True, text=True, check=True).stdout
    assert "kind (one of ['resid_pre', 'resid_post', 'mlp_out', 'attn_out']): hookpoint kind at every layer" in out
    assert "smoke: 'smollm2-tiny-random'; default: 'smollm2-135m'" in out
    bad = subprocess.run([sys.executable, "-m", "saesanity.params", "heap_metrics_vs_layer", "fast"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == ("error: heap_metrics_vs_layer: unknown profile 'fast'; "
                                                          "this file has ['default', 'paper', 'paper-mini', 'smoke']")


@pytest.mark.parametrize("override, message", [
    ({"seq_len": 1}, "seq_len=1 must be >= 2"),
    ({"n_eval_tokens": 0}, "n_eval_tokens=0 >= 1"),
    ({"model_batch_size": 0}, "model_batch_size=0 must be >= 1"),
    ({"device": "tpu"}, "device='tpu'; valid: 'cpu', 'cuda', 'cuda:<n>', 'mps'"),
    ({"lr": 0.0}, "lr=0.0 must be > 0"),
    ({"auxk_alpha": -1.0}, "auxk_alpha=-1.0 >= 0"),
    ({"model_dtype": "fp8"}, "model_dtype='fp8'; valid: \\['auto', 'float32', 'bfloat16', 'float16'\\]"),
    ({"activations": "disk"}, "activations='disk'; valid"),
    ({"seeds": [0, 1.5]}, "parameter seeds=\\[0, 1.5\\]: expected int"),
])
def test_a_bad_value_is_one_line_naming_it(override, message):
    with pytest.raises(params.ParamsError, match=message) as err:
        params.load("paulo_fig1_matched_cosines", "smoke", **override)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("default:\n  k: 8\n  k: 16\n", r"paulo_fig1_matched_cosines.yaml line 3: not valid YAML \(key 'k' given twice\)"),
    ("default:\n  k: [8\n", r"paulo_fig1_matched_cosines.yaml line \d: not valid YAML"),
    ("- default\n", "expected a mapping of profile names"),
])
def test_a_malformed_parameter_file_is_one_line_naming_it(tmp_path, text, message):
    (tmp_path / "paulo_fig1_matched_cosines.yaml").write_text(text)
    with pytest.raises(params.ParamsError, match=message):
        params.read_profiles("paulo_fig1_matched_cosines", tmp_path)


def test_epochs_multiply_the_training_tokens_not_the_activations_collected():
    from saesanity import runs

    P = params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", epochs=3)
    assert runs.train_cfg(P, 0).n_tokens == 3 * P.n_tokens
    assert runs.activation_spec(P).n_tokens == P.n_tokens
    assert params.load("paulo_fig5_overlap_vs_size_k_tokens", "smoke", epochs=3,
                       train_tokens=[3 * P.n_tokens]).train_tokens == [3 * P.n_tokens]
