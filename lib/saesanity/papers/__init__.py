"""One module per paper: its reference numbers and setup, its claims and the rules that decide their verdicts.

- `paulo`: Paulo & Belrose (2025), "Sparse autoencoders trained on the same data learn different features".
- `heap`: Heap et al. (2025), "Automated interpretability metrics do not distinguish trained and random transformers".
- `leask`: Leask et al. (2025), "Sparse autoencoders do not find canonical units of analysis".

A *claim* is a dict `{"claim": str, "ours": dict, "verdict": bool | None, ...}`: the paper's statement, the numbers
of ours it was judged on, and the verdict (True: reproduced; False: not reproduced; None: inconclusive). Every
figure's JSON carries its claims; `render_claims` turns them into the markdown the notebooks and the README show.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

__all__ = ["verdict_md", "claim_numbers", "render_claims", "table", "compared_table", "defined"]


def defined(x: Any) -> bool:
    """True for a number that is neither None (NaN/inf in a JSON) nor NaN."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def verdict_md(verdict: bool | None, inconclusive: str = "scores at chance") -> str:
    """Markdown of a verdict: **reproduced**, **not reproduced**, or **inconclusive** (`inconclusive` says why)."""
    if verdict is None:
        return f"**inconclusive** ({inconclusive})"
    if not isinstance(verdict, bool):
        raise TypeError(f"a verdict is True, False or None, not {verdict!r}")
    return "**reproduced**" if verdict else "**not reproduced**"


def claim_numbers(ours: Any) -> str:
    """A claim's `ours` as one line: dicts as `key value; …`, floats to 3 decimals, None and NaN as a dash."""
    if isinstance(ours, dict):
        return "; ".join(f"{k} {claim_numbers(x)}" for k, x in ours.items())
    if isinstance(ours, float):
        return f"{ours:.3f}" if defined(ours) else "—"
    return "—" if ours is None else str(ours)


def render_claims(claims: Iterable[dict]) -> str:
    """Markdown bullets, one per claim: `- <claim>: **<verdict>** (<our numbers>).`"""
    lines = []
    for c in claims:
        if "claim" not in c or "verdict" not in c:
            raise ValueError(f"a claim needs the keys 'claim' and 'verdict', got {sorted(c)}")
        why = c.get("inconclusive", "scores at chance")
        lines.append(f"- {c['claim']}: {verdict_md(c['verdict'], why)} ({claim_numbers(c.get('ours'))}).")
    return "\n".join(lines)


def table(rows: Iterable[tuple], header: tuple[str, ...] = ("quantity", "ours", "paper")) -> str:
    """A markdown table; cells are shown as given (format numbers before)."""
    rows = list(rows)
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"every row needs {len(header)} cells ({', '.join(header)})")
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows])


def compared_table(compared: dict[str, dict]) -> str:
    """`{quantity: {"ours": x, "paper": y}}` (the JSONs' `compared`) as a markdown table, numbers to 3 decimals."""
    bad = [k for k, v in compared.items() if not (isinstance(v, dict) and "ours" in v and "paper" in v)]
    if bad:
        raise ValueError(f"compared quantities need 'ours' and 'paper': {', '.join(bad)}")
    return table((k, claim_numbers(v["ours"]), claim_numbers(v["paper"])) for k, v in compared.items())
