"""environment.yml (conda) and requirements.lock (pip) pin the same set; the Makefile's set-up depends on
the profile and installs the torch build the caller asks for (checked with `make -n` dry runs)."""

import dataclasses
import importlib.metadata
import os
import re
import subprocess

import pytest
import yaml
from packaging.requirements import Requirement

from saesanity import params
from saesanity.models import SMOLLM2, TINY
from saesanity.paths import REPO_ROOT

STEMS = sorted(p.stem for p in (REPO_ROOT / "notebooks").glob("*.ipynb"))
LOCAL_SETUP = ("apt-get download", "-m saesanity.models build")  # the Debian text, the dequantised SmolLM2


def test_environment_yml_mirrors_lock():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lock = [l.strip() for l in (REPO_ROOT / "requirements.lock").read_text().splitlines() if l.strip()]
    assert pip[0] == "torch==2.13.0"
    assert sorted(pip[1:]) == sorted(lock)
    assert all("==" in l for l in lock)


def test_lock_does_not_pull_cuda_torch():
    lock = (REPO_ROOT / "requirements.lock").read_text().lower()
    assert "nvidia-" not in lock and "\ntorch==" not in "\n" + lock


def test_lock_requirements_accept_a_cuda_build_of_torch():
    """`pip install -r requirements.lock` after a CUDA torch (a local version such as 2.13.0+cu126) must
    keep it: nothing in the lock is a build of torch or pins one, and every torch requirement of the
    locked packages (and of the project) admits 2.13.0+cu126 (PEP 440: `==2.13.0` matches it)."""
    names = [l.split("==")[0].strip().lower() for l in (REPO_ROOT / "requirements.lock").read_text().splitlines()
             if l.strip()]
    assert not [n for n in names if re.fullmatch(r"torch(vision|audio)?|triton|nvidia-.*|cuda-.*", n)]
    reqs = [("saesanity (pyproject)", r) for r in
            re.findall(r'"(torch[^"]*)"', (REPO_ROOT / "pyproject.toml").read_text())]
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs += [(name, r) for r in dist.requires or []]
    torch_reqs = [(who, Requirement(r)) for who, r in reqs if Requirement(r).name.lower() == "torch"]
    torch_reqs = [(who, r) for who, r in torch_reqs if r.marker is None or r.marker.evaluate({"extra": ""})]
    assert torch_reqs, "expected some locked package (transformer-lens, accelerate) to require torch"
    bad = [(who, str(r)) for who, r in torch_reqs if not r.specifier.contains("2.13.0+cu126", prereleases=True)]
    assert not bad


def _dry_run(tmp_path, *args: str) -> list[str]:
    """The commands `make -n -B <args>` prints: everything a fresh machine (empty venv and cache) would run."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "SAESANITY_CACHE")}
    out = subprocess.run(["make", "-n", "-B", "-C", str(REPO_ROOT), f"VENV={tmp_path}/venv", f"CACHE={tmp_path}/cache",
                          *args], capture_output=True, text=True, env=env, check=True).stdout
    return out.splitlines()


def _runs(lines: list[str], what: str) -> bool:
    return any(what in l for l in lines)


@pytest.mark.parametrize("goal", [["figure", "STEM=leask_stitching"], ["setup"]])
def test_paper_profile_setup_skips_debian_text_and_gguf(tmp_path, goal):
    paper = _dry_run(tmp_path, *goal, "PROFILE=paper")
    assert _runs(paper, "install -r requirements.lock")  # the venv is still made
    assert not any(_runs(paper, w) for w in LOCAL_SETUP)
    for profile in ("default", "smoke", "paper-mini"):
        lines = _dry_run(tmp_path, *goal, f"PROFILE={profile}")
        assert all(_runs(lines, w) for w in LOCAL_SETUP), profile
    if goal[0] == "figure":
        assert _runs(paper, "saesanity.params leask_stitching paper")


def test_tests_set_up_the_local_data_on_any_profile(tmp_path):
    assert all(_runs(_dry_run(tmp_path, "test", "PROFILE=paper"), w) for w in LOCAL_SETUP)


def _reads_local_stand_ins(stem: str, profile: str) -> bool:
    """A profile's parameters name SmolLM2 (dequantised from the GGUF), the tiny random model, or Debian text."""
    values = dataclasses.asdict(params.load(stem, profile))
    flat = [v for x in values.values() for v in (x if isinstance(x, list) else [x])]
    return any(v in (SMOLLM2, TINY) for v in flat) or str(values.get("corpus", "")).startswith("debian")


def test_paper_figures_that_read_local_stand_ins_still_set_them_up(tmp_path):
    """PAPER_LOCAL_STEMS in the Makefile is exactly the stems whose `paper` profile reads a local stand-in."""
    wants = {s for s in STEMS if _reads_local_stand_ins(s, "paper")}
    assert wants == {"autointerp_calibration"}  # a change here is fine: the dry runs below must follow it
    for stem in STEMS:
        lines = _dry_run(tmp_path, "figure", f"STEM={stem}", "PROFILE=paper")
        assert all(_runs(lines, w) for w in LOCAL_SETUP) == (stem in wants), stem
        assert any(_runs(lines, w) for w in LOCAL_SETUP) == (stem in wants), stem


def _pip_lines(lines: list[str]) -> list[str]:
    return [l for l in lines if " -m pip " in l or "import torch" in l]


@pytest.mark.parametrize("variables,torch_line", [
    ([], "install torch==2.13.0"),
    (["TORCH_INDEX=https://download.pytorch.org/whl/cu126"],
     "install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"),
    (["TORCH=torch==2.13.0+cpu", "TORCH_INDEX=https://download.pytorch.org/whl/cpu"],
     "install torch==2.13.0+cpu --index-url https://download.pytorch.org/whl/cpu"),
    (["TORCH=skip"], None),
])
def test_torch_install_honours_torch_and_torch_index(tmp_path, variables, torch_line):
    """torch first (or, with TORCH=skip, a check that .venv has one), then the lock constrained to the torch
    now installed, so pip stops rather than replacing a CUDA build."""
    lines = _pip_lines(_dry_run(tmp_path, "setup", "PROFILE=paper", *variables))
    installs = [l for l in lines if re.search(r" install torch\b", l)]
    if torch_line is None:
        assert not installs and "import torch'" in lines[0] and "TORCH=skip" in lines[0]
    else:
        assert [l.split("-q ", 1)[1] for l in installs] == [torch_line]
        assert lines[0] == installs[0]
    constraint = f"{tmp_path}/venv/torch-constraint.txt"
    assert lines[1] == (f"{tmp_path}/venv/bin/python -c 'import torch; print(\"torch==\" + torch.__version__)' "
                        f"> {constraint}")
    assert lines[2].endswith(f"install -r requirements.lock -c {constraint}")


def test_nproc_trains_the_figures_saes_under_torchrun_first(tmp_path):
    lines = _dry_run(tmp_path, "figure", "STEM=paulo_fig1_matched_cosines", "PROFILE=paper", "NPROC=8")
    run = [i for i, l in enumerate(lines) if "torchrun --standalone --nproc_per_node 8 -m saesanity.pretrain "
           "paulo_fig1_matched_cosines paper" in l]
    notebook = [i for i, l in enumerate(lines) if "papermill" in l]
    assert run and notebook and run[0] < notebook[0]
    assert not _runs(_dry_run(tmp_path, "figure", "STEM=paulo_fig1_matched_cosines", "PROFILE=paper"), "torchrun")


def test_paper_mini_figures_run_offline_into_their_own_folder(tmp_path):
    """`make figure PROFILE=paper-mini` builds the stand-ins, runs the notebook with the hub switched off and
    writes under figures/paper-mini/ (git-ignored); other profiles keep the hub settings they are given."""
    lines = _dry_run(tmp_path, "figure", "STEM=paulo_fig1_matched_cosines", "PROFILE=paper-mini")
    notebook = [l for l in lines if "papermill" in l]
    assert notebook and "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in notebook[0]
    assert f"SAESANITY_FIGURES={REPO_ROOT}/figures/paper-mini " in notebook[0]
    assert _runs(lines, "-m saesanity.models build") and _runs(lines, "saesanity.params paulo_fig1_matched_cosines paper-mini")
    assert "figures/paper-mini/" in (REPO_ROOT / ".gitignore").read_text().splitlines()
    for profile in ("default", "paper"):
        lines = _dry_run(tmp_path, "figure", "STEM=paulo_fig1_matched_cosines", f"PROFILE={profile}")
        assert not any("HF_HUB_OFFLINE" in l for l in lines if "papermill" in l), profile
