"""Have the SAEs converged? The check every headline family's JSON records (issue 16).

A family is **converged** when, over the last doubling of training tokens (n/2 → n), the held-out FVU changes by
less than `FVU_REL_TOL` (2%, relative) **and** the shared fraction (the paper's rule, seed pair) by less than
`SHARED_TOL` (3 percentage points). Both are watched because they part ways: on the embedded default FVU
flattens while sharing is still climbing (0.0 / 0.2 / 2.0 / 5.8 / 9.7% shared at 0.25–3M tokens while FVU goes
0.39 → 0.30), so FVU alone would call it converged too early. The record keeps the last two doublings
(n/4, n/2, n) so a reader sees the trend, not only the verdict.

A family of one seed per configuration (Heap et al.'s variants) has no shared fraction: its points carry
`shared: None` and its record checks FVU alone, saying so (`checks`).
"""

from __future__ import annotations

FVU_REL_TOL = 0.02
SHARED_TOL = 0.03


def check(points: list[dict]) -> dict:
    """`points`: [{"n_tokens", "fvu", "shared"}] at successive doublings (any order; `shared` None on every point
    when there is no seed pair). Returns the points sorted, the changes over the last doubling, what was checked
    (`checks`: ["fvu", "shared"] or ["fvu"]), and `converged`: True / False, or None when fewer than two points."""
    pts = sorted(points, key=lambda p: p["n_tokens"])
    paired = [p.get("shared") is not None for p in pts]
    if any(paired) and not all(paired):
        raise ValueError("either every point has a shared fraction or none has")
    out = {"points": pts, "fvu_rel_tol": FVU_REL_TOL, "shared_tol": SHARED_TOL,
           "checks": ["fvu", "shared"] if all(paired) else ["fvu"]}
    if len(pts) < 2:
        return {**out, "converged": None, "why": "fewer than two training lengths"}
    prev, last = pts[-2], pts[-1]
    if last["n_tokens"] != 2 * prev["n_tokens"]:
        raise ValueError(f"the last two points must be a doubling, got {prev['n_tokens']} and {last['n_tokens']}")
    fvu_change = (last["fvu"] - prev["fvu"]) / prev["fvu"]
    shared_change = last["shared"] - prev["shared"] if all(paired) else None
    return {**out, "fvu_rel_change": fvu_change, "shared_change": shared_change,
            "converged": abs(fvu_change) < FVU_REL_TOL and (shared_change is None or abs(shared_change) < SHARED_TOL)}


def family(records: dict[str, dict]) -> dict:
    """One record over several configurations' checks (`records`: name -> `check` record, e.g. Fig. 5's points or
    Heap et al.'s variant x layer SAEs): converged when every checked member is; the largest changes over the
    last doubling; each member kept under `members`."""
    checked = {n: r for n, r in records.items() if r.get("converged") is not None}
    out = {"members": records, "n_members": len(records), "n_checked": len(checked),
           "n_converged": sum(bool(r["converged"]) for r in checked.values()),
           "fvu_rel_tol": FVU_REL_TOL, "shared_tol": SHARED_TOL}
    if not checked:
        return {**out, "converged": None, "why": "no member could be checked"}

    def worst(field):
        have = {n: r[field] for n, r in checked.items() if r.get(field) is not None}
        return max(have.items(), key=lambda kv: abs(kv[1])) if have else (None, None)

    (fn, fv), (sn, sv) = worst("fvu_rel_change"), worst("shared_change")
    return {**out, "converged": out["n_converged"] == len(checked), "largest_fvu_rel_change": fv,
            "largest_fvu_rel_change_at": fn, "largest_shared_change": sv, "largest_shared_change_at": sn}


def describe(record: dict) -> str:
    """One markdown line: the verdict and the changes behind it (of a `check` record or a `family` one)."""
    if "members" in record and record.get("converged") is not None:
        verdict = "**Converged**" if record["converged"] else "**Not converged**"
        line = (f"{verdict}: {record['n_converged']} of {record['n_checked']} configurations meet the check over the "
                f"last doubling of training tokens; largest held-out FVU change "
                f"{record['largest_fvu_rel_change']:+.1%} ({record['largest_fvu_rel_change_at']}, limit "
                f"±{record['fvu_rel_tol']:.0%})")
        if record.get("largest_shared_change") is not None:
            line += (f", largest shared-fraction change {100 * record['largest_shared_change']:+.1f} points "
                     f"({record['largest_shared_change_at']}, limit ±{100 * record['shared_tol']:.0f})")
        else:
            line += "; the shared fraction is not checked (one seed per SAE)"
        return line + "."
    if record.get("converged") is None:
        return f"**Convergence not checked**: {record.get('why', 'no record')}."
    pts = record["points"]
    verdict = "**Converged**" if record["converged"] else "**Not converged**"
    fvu = f"held-out FVU {record['fvu_rel_change']:+.1%} (limit ±{record['fvu_rel_tol']:.0%})"
    if record.get("shared_change") is None:
        trend = " → ".join(f"{p['n_tokens']:,}: FVU {p['fvu']:.3f}" for p in pts)
        return (f"{verdict} in FVU over the last doubling of training tokens: {fvu}; the shared fraction is not "
                f"checked (one seed per SAE). {trend}.")
    trend = " → ".join(f"{p['n_tokens']:,}: FVU {p['fvu']:.3f}, {p['shared']:.1%} shared" for p in pts)
    return (f"{verdict} over the last doubling of training tokens: {fvu}, shared fraction "
            f"{100 * record['shared_change']:+.1f} points (limit ±{100 * record['shared_tol']:.0f}). {trend}.")
