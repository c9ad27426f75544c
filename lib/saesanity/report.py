"""README "Results" section, generated from `figures/*.json` so no number is typed by hand.

    python -m saesanity.report          # rewrite the block between the markers in README.md
    python -m saesanity.report --check  # exit 1 if README.md is out of date (a test runs this)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .paths import REPO_ROOT, figures_dir

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def fig1_section(doc: dict) -> str:
    c = doc["compared"]
    rows = [
        ("shared latents, paper's rule (dec & enc > 0.7, same partner)", _pct, "shared_frac_paper"),
        ("shared latents, dec & enc > 0.7 (partners may differ)", _pct, "shared_frac_dec_and_enc"),
        ("shared latents, decoder only > 0.7", _pct, "shared_frac_decoder_only"),
        ("encoder and decoder matchings agree", _pct, "agree_frac"),
        ("mean Hungarian-matched decoder cosine", _num, "mean_matched_dec_cos"),
        ("mean Hungarian-matched encoder cosine", _num, "mean_matched_enc_cos"),
        ("mean max decoder cosine", _num, "mean_max_dec_cos"),
        ("mean alignment, matchings agree ((dec+enc)/2)", _num, "mean_alignment_agree"),
        ("mean alignment, matchings disagree", _num, "mean_alignment_disagree"),
    ]
    lines = [
        "### Paulo & Belrose Fig. 1 — two SAEs that differ only in seed",
        "",
        f"![Fig 1](figures/{doc['stem']}.png)",
        "",
        f"Setup: **{doc['setup']}** — {doc['scale']}. "
        f"Paper: Pythia-160M layer-6 MLP, 32,768 latents, k=32, 8B Pile tokens.",
        "",
        "| quantity | ours | paper |",
        "|---|---|---|",
    ]
    lines += [f"| {label} | {fmt(c[key]['ours'])} | {fmt(c[key]['paper'])} |" for label, fmt, key in rows]
    held = doc["heldout"]
    fvus = ", ".join(format(h["fvu"], ".3f") for h in held)
    lines += [
        "",
        f"Held-out FVU of the two SAEs: {fvus} "
        f"(L0 {held[0]['l0']:.0f}). In the paper's Fig. 5, 4K latents (the size nearest ours) share "
        f"{_pct(doc['paper_shared_frac_at_4k_latents'])}, and its shortest training run (0.8B tokens) shares "
        f"{_pct(doc['paper_shared_frac_at_0p8b_tokens'])}.",
        "",
        "Verdicts (computed from the numbers above):",
        f"- Latents whose encoder and decoder matchings agree are the better-aligned ones: "
        f"**{'reproduced' if c['mean_alignment_agree']['ours'] > c['mean_alignment_disagree']['ours'] else 'not reproduced'}**.",
        f"- Shared fraction at least as high as the paper's headline: "
        f"**{'reproduced' if c['shared_frac_paper']['ours'] >= c['shared_frac_paper']['paper'] else 'not reproduced'}**"
        + (" — our SAEs train on far fewer tokens than the paper's shortest run, and the paper finds sharing rises"
           " with training tokens." if doc["profile"] != "paper" else "."),
    ]
    return "\n".join(lines)


SECTIONS = {"paulo_fig1_matched_cosines": fig1_section}


def render(figs: Path | None = None) -> str:
    figs = figs or figures_dir()
    parts = []
    for stem, fn in SECTIONS.items():
        path = figs / f"{stem}.json"
        if path.exists():
            parts.append(fn(json.loads(path.read_text())))
        else:
            parts.append(f"### {stem}\n\nNot generated yet: `make figure STEM={stem}`.")
    return "\n\n".join(parts)


def updated_readme(text: str, block: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"README.md needs the markers {START} and {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme = REPO_ROOT / "README.md"
    text = readme.read_text()
    new = updated_readme(text, render())
    if "--check" in argv:
        if new != text:
            print("README.md results are out of date: run `python -m saesanity.report`", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
