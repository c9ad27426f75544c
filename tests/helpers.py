"""Test data shared by several test modules."""

import numpy as np


def planted(n=8192, d=16, n_feat=32, seed=0, density=0.06):
    """Activations [n, d] = sparse non-negative codes over `n_feat` unit directions + 0.5; returns (acts, feats)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n_feat, d))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    coef = (rng.random((n, n_feat)) < density) * rng.uniform(1, 3, (n, n_feat))
    return (coef @ feats + 0.5).astype(np.float32), feats


def add_to_fake_hub(hub_cache, repo_id: str, folder, revision: str = "main", repo_type: str = "model"):
    """Put `folder` (e.g. written by `save_pretrained`) into a Hugging Face hub cache as `repo_id@revision`.

    The layout is the hub cache's own: `<hub_cache>/<type>s--<org>--<name>/snapshots/<sha>/<files>` and
    `refs/<revision>` holding `<sha>`, a 40-hex stand-in commit derived from (repo_id, revision). With the
    hub pointed at `hub_cache` and offline (`point_hub_at`), `from_pretrained(repo_id, revision=revision)`
    runs the real hub code path and resolves to these files. Returns the snapshot folder.
    """
    import hashlib
    import shutil
    from pathlib import Path

    sha = hashlib.sha1(f"{repo_type}:{repo_id}@{revision}".encode()).hexdigest()
    repo = Path(hub_cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / sha
    shutil.copytree(folder, snapshot)
    ref = repo / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(sha)
    return snapshot


def point_hub_at(monkeypatch, hub_cache) -> None:
    """Make huggingface_hub (and so transformers) read `hub_cache`, offline, for one test.

    huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE once at import, so its module constants are
    patched; the environment variables are set too, for subprocesses the test starts.
    """
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
