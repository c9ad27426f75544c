"""environment.yml (conda) and requirements.lock (pip) pin the same set."""

import yaml

from saesanity.paths import REPO_ROOT


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
