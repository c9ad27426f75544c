"""Absolute paths: repository root, cache directory, figures directory."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


def cache_dir() -> Path:
    """`$SAESANITY_CACHE`, default `<repo>/.cache`. Read at call time so tests can redirect it."""
    return Path(os.environ.get("SAESANITY_CACHE", REPO_ROOT / ".cache")).resolve()


def figures_dir() -> Path:
    """`$SAESANITY_FIGURES`, default `<repo>/figures` (tests point it at a temporary folder)."""
    return Path(os.environ.get("SAESANITY_FIGURES", REPO_ROOT / "figures")).resolve()


def debian_dir() -> Path:
    """Where the Debian text packages are extracted (`make data`)."""
    return cache_dir() / "debian"
