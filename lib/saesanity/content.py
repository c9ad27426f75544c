"""Content keys: what a user's local folder or a hub revision holds, for the cache keys of what is computed from it.

The cache keys an artifact by what determines it. For a model or corpus we build ourselves (the embedded SmolLM2,
the stand-ins, the Debian text) that is its name and build fields. For a **local folder** (a model folder, an
`hf:` dataset folder or files) it is the SHA-256 of every file in it (`files_digest`): editing a file in place
changes the key, so activations, SAEs and scores made from the old content are not reused. For a **hub** model or
dataset it is the commit its revision resolves to (`hub_commit`): a moved branch changes the key; a pinned
40-hex commit is its own key. When the commit cannot be resolved (offline, never downloaded) the key falls back to
the name and revision, and a note on stderr says so once.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import sys
from pathlib import Path

from .cache import sha256_file

_COMMIT = re.compile(r"[0-9a-f]{40}")


def _files(target: str | Path) -> list[Path]:
    """The files `target` names: a file, a glob, or every non-hidden file under a folder, sorted."""
    target = str(target)
    if any(c in target for c in "*["):
        found = [Path(p) for p in glob.glob(target, recursive=True)]
        return sorted(p for p in found if p.is_file())
    path = Path(target)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(path).parts))


def files_digest(target: str | Path) -> str:
    """`sha256:<hex>` over the relative name and SHA-256 of each file `target` names (a folder, file or glob);
    each file is hashed once per process unless its size or mtime changes (`cache.sha256_file`)."""
    files = _files(target)
    if not files:
        raise FileNotFoundError(f"no files under {target}")
    base = Path(target) if Path(target).is_dir() else None
    h = hashlib.sha256()
    for p in files:
        name = p.relative_to(base).as_posix() if base else p.name
        h.update(f"{name}\0{sha256_file(p)}\n".encode())
    return "sha256:" + h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def hub_commit(repo: str, revision: str | None, repo_type: str = "model") -> str | None:
    """The commit `revision` (default: main) of hub repo `repo` resolves to: the hub's answer when it can be
    reached (and HF_HUB_OFFLINE is unset), else the ref recorded in the local hub cache, else None (a note on
    stderr). Resolved once per process, so one run keys every artifact by one commit."""
    if revision and _COMMIT.fullmatch(revision):
        return revision
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        try:
            from huggingface_hub import HfApi

            sha = HfApi().repo_info(repo, revision=revision, repo_type=repo_type, timeout=10).sha
            if sha:
                return sha
        except Exception:  # unreachable, unknown, gated: fall back to what was downloaded before
            pass
    ref = (Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo.replace('/', '--')}" / "refs" / (revision or "main"))
    if ref.is_file() and _COMMIT.fullmatch(sha := ref.read_text().strip()):
        return sha
    print(f"saesanity: could not resolve {repo_type} {repo}@{revision or 'main'} to a commit (offline and not in "
          f"the hub cache): its cached artifacts are keyed by name, so pin a commit (@<40 hex>) to be safe",
          file=sys.stderr)
    return None


def local_or_hub(target: str, revision: str | None, repo_type: str) -> str | None:
    """The content key of a local path (its files' digest) or a hub repo (`commit:<sha>`), None if unresolved."""
    if os.path.exists(target) or any(c in target for c in "*["):
        return files_digest(target)
    sha = hub_commit(target, revision, repo_type)
    return f"commit:{sha}" if sha else None
