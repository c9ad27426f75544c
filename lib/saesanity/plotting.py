"""One style for every figure; `savefig` writes PNG + PDF, `write_json` the quoted numbers.

Figures made on a profile other than `paper` carry the stamp "embedded default — not the paper's
setup" (smoke runs say "smoke run", paper-mini runs `PAPER_MINI_LABEL`), and their JSON says the same
under `setup`.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off screen; a notebook keeps its inline backend,
    matplotlib.use("Agg")  # so its figures show in the executed notebook (papermill, `make lab`, GitHub)
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from . import __version__, machine  # noqa: E402
from .jsonable import plain  # noqa: E402
from .paths import figures_dir  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "svg.hashsalt": "saesanity",
}
COLORS = {"agree": "#1f77b4", "disagree": "#ff7f0e", "paper": "#555555"}


def use_style() -> None:
    """The one theme of every figure: seaborn's `ticks` style with our sizes, grid and PDF fonts (`STYLE`)."""
    sns.set_theme(style="ticks", palette="deep", rc=STYLE)


PAPER_MINI_LABEL = "paper-mini: the paper's code path on tiny local stand-ins — not a result"


def stamp_text(profile: str) -> str | None:
    if profile == "paper":
        return None
    if profile == "smoke":
        return "smoke run (tiny random model) — not a result"
    if profile == "paper-mini":
        return PAPER_MINI_LABEL
    return "embedded default — not the paper's setup"


def setup_label(profile: str) -> str:
    return {"paper": "paper", "smoke": "smoke", "paper-mini": PAPER_MINI_LABEL}.get(
        profile, "embedded default (not the paper's setup)")


def stamp(fig, profile: str, scale: str = "") -> None:
    """Write the not-the-paper stamp (if any) and the run's scale along the bottom of `fig`."""
    text = stamp_text(profile)
    if text:  # its own line, above the scale line, so long scale lines never run into it
        fig.text(0.99, 0.035, text, ha="right", va="bottom", fontsize=8, color="#b22222", style="italic")
    if scale:
        fig.text(0.01, 0.005, scale, ha="left", va="bottom", fontsize=7, color="#444444")


def savefig(fig, stem: str, profile: str, scale: str = "", out_dir: Path | None = None) -> None:
    """Stamp and save `fig` as `<figures>/<stem>.png` and `.pdf` (no embedded timestamps). Returns nothing, so
    a notebook cell ending with it shows the figure (inline backend), not this machine's paths."""
    out = Path(out_dir or figures_dir())
    out.mkdir(parents=True, exist_ok=True)
    stamp(fig, profile, scale)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], metadata={"Software": None})
    fig.savefig(paths[1], metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})


def write_json(stem: str, params: Any, numbers: dict[str, Any], out_dir: Path | None = None) -> Path:
    """`<figures>/<stem>.json`: resolved parameters, profile, setup label, versions, and the numbers."""
    out = Path(out_dir or figures_dir())
    out.mkdir(parents=True, exist_ok=True)
    profile = getattr(params, "profile", "default")
    doc = {
        "stem": stem,
        "profile": profile,
        "setup": setup_label(profile),
        "saesanity_version": __version__,
        "python": platform.python_version(),
        "machine": machine.info(),  # what a regenerated figure is bit-identical on (README, Reliability)
        "params": plain(params, 6),
        **plain(numbers, 6),
    }
    path = out / f"{stem}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def side_by_side(ours: float | None, paper: float | None) -> dict[str, float | None]:
    """The JSON shape for a number the paper also reports."""
    return {"ours": ours, "paper": paper}



def human(n: float) -> str:
    """1234567 -> '1.23M'; 4608 -> '4.6K' (for scale lines)."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def train_tokens(P, word: str = "tokens") -> str:
    """P's training tokens per SAE for a scale line: '8M tokens (2 epochs over 4M rows)', or '1M tokens' with one
    epoch (P.n_tokens activation rows, each SAE passing over them P.epochs times)."""
    epochs = getattr(P, "epochs", 1)
    line = f"{human(P.n_tokens * epochs)} {word}"
    return line + (f" ({epochs} epochs over {human(P.n_tokens)} rows)" if epochs > 1 else "")


def kde_contours(ax, x: np.ndarray, y: np.ndarray, color: str, mass=(0.5, 0.8, 0.95), max_points: int = 3000,
                 extent=(-0.1, 1.0, -0.1, 1.0)) -> None:
    """seaborn's bivariate Gaussian KDE of (x, y), drawn at the contours that enclose `mass` of the probability
    (highest-density regions: seaborn's iso-proportion levels 1 - mass), on at most `max_points` points (a fixed
    random subset) and clipped to `extent`; nothing is drawn for fewer than 20 points or a degenerate cloud."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 20 or np.linalg.matrix_rank(np.cov(np.stack([x, y]))) < 2:
        return
    keep = np.random.default_rng(0).permutation(x.size)[:max_points]
    sns.kdeplot(x=x[keep], y=y[keep], levels=sorted(1 - np.asarray(mass)), color=color, linewidths=0.8, ax=ax,
                clip=(extent[:2], extent[2:]))


def roc_band(ax, band: dict, color: str, label: str) -> None:
    """A bootstrap ROC band (`autointerp.roc.bootstrap_band`): mean curve and ±1.96 sd shading, on the chance diagonal."""
    ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=0.8)
    ax.fill_between(band["fpr"], band["lo"], band["hi"], color=color, alpha=0.15, lw=0)
    ax.plot(band["fpr"], band["mean"], color=color, lw=1.4, label=f"{label} ({band['auroc_mean']:.2f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
