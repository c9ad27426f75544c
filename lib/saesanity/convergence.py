"""Have the SAEs converged? The check every headline family's JSON records (issue 16).

A family is **converged** when, over the last doubling of training tokens (n/2 → n), the held-out FVU changes by
less than `FVU_REL_TOL` (2%, relative) **and** the shared fraction (the paper's rule, seed pair) by less than
`SHARED_TOL` (3 percentage points). Both are watched because they part ways: on the embedded default FVU
flattens while sharing is still climbing (0.0 / 0.2 / 2.0 / 5.8 / 9.7% shared at 0.25–3M tokens while FVU goes
0.39 → 0.30), so FVU alone would call it converged too early. The record keeps the last two doublings
(n/4, n/2, n) so a reader sees the trend, not only the verdict.
"""

from __future__ import annotations

FVU_REL_TOL = 0.02
SHARED_TOL = 0.03


def check(points: list[dict]) -> dict:
    """`points`: [{"n_tokens", "fvu", "shared"}] at successive doublings (any order). Returns the points sorted,
    the changes over the last doubling, and `converged`: True / False, or None when fewer than two points."""
    pts = sorted(points, key=lambda p: p["n_tokens"])
    out = {"points": pts, "fvu_rel_tol": FVU_REL_TOL, "shared_tol": SHARED_TOL}
    if len(pts) < 2:
        return {**out, "converged": None, "why": "fewer than two training lengths"}
    prev, last = pts[-2], pts[-1]
    if last["n_tokens"] != 2 * prev["n_tokens"]:
        raise ValueError(f"the last two points must be a doubling, got {prev['n_tokens']} and {last['n_tokens']}")
    fvu_change = (last["fvu"] - prev["fvu"]) / prev["fvu"]
    shared_change = last["shared"] - prev["shared"]
    return {**out, "fvu_rel_change": fvu_change, "shared_change": shared_change,
            "converged": abs(fvu_change) < FVU_REL_TOL and abs(shared_change) < SHARED_TOL}


def describe(record: dict) -> str:
    """One markdown line: the verdict and the changes behind it."""
    if record.get("converged") is None:
        return f"**Convergence not checked**: {record.get('why', 'no record')}."
    pts = record["points"]
    trend = " → ".join(f"{p['n_tokens']:,}: FVU {p['fvu']:.3f}, {p['shared']:.1%} shared" for p in pts)
    verdict = "**Converged**" if record["converged"] else "**Not converged**"
    return (f"{verdict} over the last doubling of training tokens: held-out FVU {record['fvu_rel_change']:+.1%} "
            f"(limit ±{record['fvu_rel_tol']:.0%}), shared fraction {100 * record['shared_change']:+.1f} points "
            f"(limit ±{100 * record['shared_tol']:.0f}). {trend}.")
