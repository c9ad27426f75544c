"""`make check-figures` (saesanity.figcheck): the comparison rules on hand-made figure JSONs, each outcome."""

import json
import os
import subprocess
import sys

import pytest

from saesanity import figcheck, paths

AMD = {"cpu": "AMD EPYC", "isa": ["avx512_bf16"], "cores": 2, "threads": 2, "torch": "2.13.0+cpu", "cuda": None}
INTEL = {**AMD, "cpu": "Intel(R) Xeon(R)", "isa": ["amx_bf16", "avx512_bf16"]}


def _doc(machine=AMD, fvu=0.3118, shared=0.0352, verdict=True, stem="paulo_fig1_matched_cosines", **extra):
    return {"stem": stem, "machine": machine, "params": {"d_sae": 4608, "k": 32},
            "compared": {"shared_frac_paper": {"ours": shared, "paper": 0.416}},
            "heldout": [{"fvu": fvu, "l0": 32.0}], "training": [{"seconds": 250.0, "tokens_per_s": 4000.0}],
            "claims": [{"claim": "Shared fraction at least as high as the paper's", "verdict": verdict}], **extra}


def test_on_one_machine_every_number_must_be_identical_but_timings():
    same = figcheck.compare(_doc(), _doc(training=[{"seconds": 99.0, "tokens_per_s": 1.0}]))
    assert same.ok and same.same_machine and same.compared == 4 and same.identical == 4  # shared, paper, fvu, l0
    moved = figcheck.compare(_doc(), _doc(fvu=0.3119))
    assert not moved.ok and [m.path for m in moved.moved] == ["heldout[0].fvu"]


def test_across_cpus_a_number_passes_within_its_tolerance_and_fails_beyond():
    # fig 1: atol 0.01 + rtol 0.05 · |old|: 0.3118 -> 0.3143 (the Intel vs AMD) is within
    near = figcheck.compare(_doc(INTEL), _doc(AMD, fvu=0.3143, shared=0.0362))
    assert near.ok and not near.same_machine and [m.path for m in near.within] == [
        "compared.shared_frac_paper.ours", "heldout[0].fvu"]
    assert near.within[1].allowed == pytest.approx(0.01 + 0.05 * 0.3118)
    far = figcheck.compare(_doc(INTEL), _doc(AMD, fvu=0.40))
    assert not far.ok and [m.path for m in far.moved] == ["heldout[0].fvu"]
    assert "beyond heldout[0].fvu: 0.3118 -> 0.4" in figcheck.report(far)


def test_a_flipped_verdict_fails_even_when_every_number_is_within_tolerance():
    c = figcheck.compare(_doc(INTEL), _doc(AMD, shared=0.0355, verdict=False))
    assert c.within and not c.moved and not c.ok
    assert c.flips == [("Shared fraction at least as high as the paper's", True, False)]
    assert "verdict flipped: \"Shared fraction at least as high as the paper's\": True -> False" in figcheck.report(c)


def test_other_parameters_are_not_comparable_and_a_lost_number_fails_but_an_added_one_does_not():
    c = figcheck.compare(_doc(), {**_doc(), "params": {"d_sae": 9216, "k": 32}})
    assert not c.ok and "made with other parameters (d_sae)" in c.problem
    lost = _doc()
    del lost["heldout"]
    assert figcheck.compare(_doc(), lost).missing == ["heldout[0].fvu", "heldout[0].l0"]
    gained = figcheck.compare(_doc(), _doc(new_number=1.0))
    assert gained.ok and gained.added == ["new_number"]
    # a field added to the parameters since (with its default) keeps the figure comparable
    assert figcheck.compare(_doc(), {**_doc(), "params": {"d_sae": 4608, "k": 32, "sae_autocast": "none"}}).ok


def test_a_figure_in_another_precision_is_compared_as_from_another_cpu():
    """`auto` resolves model_dtype / sae_autocast per machine: bf16 figures against an fp32 machine's."""
    fp32 = {**AMD, "cpu_id": "family 25 model 1", "isa": ["avx2"]}

    def doc(machine, dtype, autocast, **kw):
        d = _doc(machine, **kw)
        return {**d, "params": {**d["params"], "model_dtype": dtype, "sae_autocast": autocast}}

    near = figcheck.compare(doc(AMD, "bfloat16", "bf16"), doc(fp32, "float32", "none", fvu=0.3143))
    assert near.ok and not near.same_machine and [m.path for m in near.within] == ["heldout[0].fvu"]
    assert near.precision == [("model_dtype", "bfloat16", "float32"), ("sae_autocast", "bf16", "none")]
    assert "another precision (model_dtype bfloat16 -> float32, sae_autocast bf16 -> none)" in figcheck.report(near)
    # even on one machine a precision change is not expected to be bit-identical
    same_cpu = figcheck.compare(doc(AMD, "bfloat16", "bf16"), doc(AMD, "float32", "none", fvu=0.3143))
    assert same_cpu.ok and not same_cpu.same_machine
    flipped = figcheck.compare(doc(AMD, "bfloat16", "bf16"), doc(fp32, "float32", "none", verdict=False))
    assert not flipped.ok and flipped.flips
    other = figcheck.compare(doc(AMD, "bfloat16", "bf16"), {**doc(fp32, "float32", "none"),
                                                             "params": {"d_sae": 9216, "k": 32, "model_dtype": "float32"}})
    assert not other.ok and "made with other parameters (d_sae): not comparable" in other.problem


def test_illustrative_fields_are_compared_on_one_machine_only():
    a = _doc(INTEL, stem="leask_meta_sae", examples=[{"latent": 17}])
    b = _doc(AMD, stem="leask_meta_sae", examples=[{"latent": 2620}])
    assert figcheck.compare(a, b).ok
    assert not figcheck.compare(a, {**b, "machine": INTEL}).ok


def test_the_cli_exits_1_on_a_change_and_2_on_a_bad_folder(tmp_path, capsys):
    committed, regenerated = tmp_path / "committed", tmp_path / "regenerated"
    committed.mkdir(), regenerated.mkdir()
    (committed / "paulo_fig1_matched_cosines.json").write_text(json.dumps(_doc()))
    (regenerated / "paulo_fig1_matched_cosines.json").write_text(json.dumps(_doc()))
    assert figcheck.main([str(regenerated), "--committed", str(committed)]) == 0
    assert "1 of 1 figures reproduce" in capsys.readouterr().out
    (regenerated / "paulo_fig1_matched_cosines.json").write_text(json.dumps(_doc(fvu=0.5)))
    assert figcheck.main([str(regenerated), "--committed", str(committed)]) == 1
    assert "not: paulo_fig1_matched_cosines" in capsys.readouterr().out
    assert figcheck.main([str(tmp_path / "nowhere")]) == 2


@pytest.mark.notebook
def test_a_figure_regenerated_from_a_cold_cache_on_this_machine_is_bit_identical(tmp_path):
    """Two runs of one notebook, each from an empty cache of its own, compared as `make check-figures` does."""
    from conftest import linked_cache

    stem = "heap_toy_models"
    flat = tmp_path / "params.yaml"
    flat.write_text(subprocess.run([sys.executable, "-m", "saesanity.params", stem, "smoke"], check=True,
                                   capture_output=True, text=True).stdout)
    for run in ("a", "b"):
        env = dict(os.environ, TQDM_DISABLE="1", SAESANITY_FIGURES=str(tmp_path / run),
                   SAESANITY_CACHE=str(linked_cache(tmp_path / f"cache-{run}")))
        subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "saesanity", "-f", str(flat),
                        "--cwd", str(paths.NOTEBOOKS_DIR), str(paths.NOTEBOOKS_DIR / f"{stem}.ipynb"),
                        str(tmp_path / f"{run}.ipynb")], env=env, check=True, capture_output=True)
    (c,) = figcheck.compare_dirs(tmp_path / "a", tmp_path / "b")
    assert c.ok and c.same_machine and c.compared > 20 and c.identical == c.compared, figcheck.report(c, True)
