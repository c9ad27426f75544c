"""The auto-interp studies the notebooks show, built from the cached pipeline steps.

* `calibration` — synthetic latents of known meaning (`examples.rule_acts`) and noise latents over the
  held-out text, explained and scored by each explainer: what the configured models can and cannot do.
* `variant_records` — Heap et al. App. B: latents of the (variant × layer) SAEs of `heap_metrics_vs_layer`
  (same parameters, so the same cached SAEs and held-out activations), explained and scored.
* `seed_pair_records` — Paulo & Belrose Fig. 3 / Table 1: seed-0 latents sampled evenly over how many
  seeds share them (the paper's rule), and their decoder-Hungarian partners in seed 1, explained and scored.
Latents are sampled uniformly (seed `interp_seed`) among the eligible ones (`examples.eligible_latents`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import baselines, matching, runs
from ..corpus import token_sequences
from ..models import load_tokenizer, tokenizer_id
from ..params import interp_config  # noqa: F401  (studies.interp_config: the notebooks' name for it)
from . import pipeline
from .examples import LatentActs, Windows, eligible_latents, latent_acts_cached, piece_table, rule_acts
from .llm import make_backend
from .scorers import Encoder


class Tools:
    """One chat backend, one sentence encoder and one token-piece table, loaded only when first needed."""

    def __init__(self, P, tokenizer_spec: str):
        self.P, self.spec = P, tokenizer_spec
        self.backend = make_backend(P.llm_backend, P.llm_model, api_base=P.api_base, api_key_env=P.api_key_env,
                                    dtype=P.llm_dtype, max_concurrency=getattr(P, "llm_concurrency", 32))
        self.encoder = Encoder()
        self._pieces: list[str] | None = None

    @property
    def pieces(self) -> list[str]:
        if self._pieces is None:
            self._pieces = piece_table(load_tokenizer(self.spec))
        return self._pieces


_TOOLS: dict[tuple, Tools] = {}


def tools_for(P, tokenizer_spec: str) -> Tools:
    """One `Tools` per (chat model settings, tokenizer) per process: the model loads once per notebook."""
    key = (P.llm_backend, P.llm_model, P.api_base, P.api_key_env, P.llm_dtype, getattr(P, "llm_concurrency", 32),
           tokenizer_spec)
    if key not in _TOOLS:
        _TOOLS[key] = Tools(P, tokenizer_spec)
    return _TOOLS[key]


def windows_of(acts_dir: Path, n_rows: int, ctx_len: int, drop_first: int = 1) -> Windows:
    return Windows(np.load(Path(acts_dir) / "tokens.npy"), drop_first, ctx_len, n_rows)


def sample_latents(la: LatentActs, win: Windows, cfg: pipeline.InterpConfig, n: int, seed: int) -> list[int]:
    ok = eligible_latents(la, win, cfg.n_explain + cfg.n_score_act)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ok, size=min(n, ok.size), replace=False).tolist())


def score_latents(tools: Tools, key: dict, la, win, latents, cfg, progress: bool, desc: str) -> list[dict]:
    """`pipeline.score_latents` with this study's tools (chat backend, embedding encoder, token pieces)."""
    return pipeline.score_latents(key, la, win, latents, cfg, lambda: tools.pieces, backend=tools.backend,
                                  encoder=tools.encoder, progress=progress, desc=desc)


def calibration(P, *, progress: bool = True) -> dict:
    """{"names", "is_rule", "records": {explainer: records}, "configs": {explainer: describe()}}."""
    tools = tools_for(P, P.model)
    tok_id = tokenizer_id(P.model)
    drop = 1
    n_seq = -(-P.n_eval_tokens // (P.seq_len - drop))
    seqs = token_sequences(P.corpus, load_tokenizer(P.model), tok_id, P.seq_len, split="heldout", seed=P.data_seed,
                           max_tokens=n_seq * P.seq_len)[:n_seq]
    flat = seqs[:, drop:].reshape(-1)
    la, names = rule_acts(tools.pieces, flat, P.rules, P.n_noise, P.noise_rate, seed=P.interp_seed)
    win = Windows(seqs, drop, P.ctx_len, flat.size)
    key = {"calibration": P.rules, "n_noise": P.n_noise, "noise_rate": P.noise_rate, "model": tok_id,
           "corpus": P.corpus, "seq_len": P.seq_len, "n_rows": int(flat.size), "data_seed": P.data_seed}
    out = {"names": names, "is_rule": [i < len(P.rules) for i in range(len(names))],
           "n_active_tokens": la.counts().tolist(), "records": {}, "configs": {}}
    for e in P.explainers:
        cfg = interp_config(P, e)
        out["records"][e] = score_latents(tools, key, la, win, list(range(len(names))), cfg, progress, f"calibration, {e}")
        out["configs"][e] = cfg.describe()
    return out


def variant_records(P, variant: str, *, progress: bool = True) -> dict[str, list[dict]]:
    """hookpoint -> records of `P.n_latents` latents of that (variant, layer) SAE."""
    saes = baselines.variant_saes(P, variant, progress=progress)
    held = runs.data_for(baselines.view(P, variant), "heldout", progress, baselines.hookpoints(P))
    tools = tools_for(P, P.model)
    cfg = interp_config(P, P.explainer)
    out = {}
    for layer in P.interp_layers:
        h = f"{P.kind}.{layer}"
        acts, acts_dir = held[h]
        la = latent_acts_cached(saes[h].sae, saes[h].path, acts, acts_dir)
        win = windows_of(acts_dir, acts.shape[0], P.ctx_len)
        latents = sample_latents(la, win, cfg, P.n_latents, P.interp_seed)
        out[h] = score_latents(tools, {"sae": saes[h].path.name, "acts": acts_dir.name}, la, win, latents, cfg, progress,
                        f"{variant} {h}")
    return out


def seed_pair_records(P, *, progress: bool = True) -> dict:
    """Seed-0 latents spread evenly over `found` (in how many of the seeds each is shared, 1 = only
    seed 0) and their seed-1 decoder-Hungarian partners, both explained and scored.

    Returns {"latents", "partners", "found", "dec_cos", "enc_cos", "alignment" (mean of the two),
    "records0", "records1", "n_seeds", "config"}; records are aligned with `latents`."""
    trained, _ = runs.seed_saes(P, progress=progress)
    pairs = runs.pair_matches(trained, progress=progress)
    masks = matching.masks_from_pairs(pairs, len(trained), matching.SharedRule(P.threshold))
    found = matching.found_in(masks, 0)
    acts, acts_dir = runs.data_for(P, "heldout", progress)
    la = [latent_acts_cached(t.sae, t.path, acts, acts_dir) for t in trained[:2]]
    win = windows_of(acts_dir, acts.shape[0], P.ctx_len)
    cfg = interp_config(P, P.explainer)
    need = cfg.n_explain + cfg.n_score_act
    m = pairs[0, 1]
    partner = m.dec_partner
    ok1 = np.zeros(la[1].n_latents, bool)
    ok1[eligible_latents(la[1], win, need)] = True
    ok = np.array([f for f in eligible_latents(la[0], win, need) if ok1[partner[f]]], dtype=np.int64)
    rng = np.random.default_rng(P.interp_seed)
    groups = [ok[found[ok] == c] for c in range(1, len(trained) + 1)]
    per = [P.n_latents // len(groups) + (1 if i < P.n_latents % len(groups) else 0) for i in range(len(groups))]
    chosen = sorted(int(f) for g, n in zip(groups, per) for f in rng.choice(g, size=min(n, g.size), replace=False))
    enc = [matching.directions(t.sae)[0] for t in trained[:2]]
    tools = tools_for(P, P.model)
    key = lambda t: {"sae": t.path.name, "acts": acts_dir.name}  # noqa: E731
    rec0 = score_latents(tools, key(trained[0]), la[0], win, chosen, cfg, progress, "seed 0")
    rec1 = score_latents(tools, key(trained[1]), la[1], win, [int(partner[f]) for f in chosen], cfg, progress, "seed 1")
    dec = np.array([m.dec_cos[f] for f in chosen])
    encc = np.array([float(enc[0][f] @ enc[1][partner[f]]) for f in chosen])
    return {"latents": chosen, "partners": [int(partner[f]) for f in chosen], "found": [int(found[f]) for f in chosen],
            "dec_cos": dec.tolist(), "enc_cos": encc.tolist(), "alignment": ((dec + encc) / 2).tolist(),
            "records0": rec0, "records1": rec1, "n_seeds": len(trained), "config": cfg.describe(),
            "eligible_by_found": {str(c): int(g.size) for c, g in enumerate(groups, 1)}}


# Paulo & Belrose Table 1: five alignment bins around the paper's rows (0.10, 0.27, 0.44, 0.75, 0.97)
TABLE1_BINS = [(0.0, 0.2), (0.2, 0.35), (0.35, 0.6), (0.6, 0.85), (0.85, 1.0001)]


def latent_score(rec: dict, scorer: str) -> float:
    """A latent's score for ranking: the scorer's per-latent AUROC (NaN when missing)."""
    v = rec.get(scorer, {}).get("auroc")
    return float("nan") if v is None else float(v)


def table1_rows(d: dict, scorer: str = "detection", threshold: float = 0.7) -> list[dict]:
    """One matched pair per alignment bin, chosen as the paper does: if the pair's alignment is above
    `threshold`, the pair maximising score(seed 0) + score(seed 1); below it, the pair maximising
    score(seed 0) − score(seed 1) (a good explanation in seed 0 that seed 1 lacks). Bins with no
    scored pair give no row."""
    s0 = np.array([latent_score(r, scorer) for r in d["records0"]])
    s1 = np.array([latent_score(r, scorer) for r in d["records1"]])
    a = np.array(d["alignment"])
    rows = []
    for lo, hi in TABLE1_BINS:
        idx = np.flatnonzero((a >= lo) & (a < hi) & np.isfinite(s0) & np.isfinite(s1))
        if idx.size == 0:
            continue
        obj = np.where(a[idx] > threshold, s0[idx] + s1[idx], s0[idx] - s1[idx])
        i = int(idx[np.argmax(obj)])
        rows.append({"bin": [lo, min(hi, 1.0)], "alignment": float(a[i]), "latents": [d["latents"][i], d["partners"][i]],
                     "explanations": [d["records0"][i]["explanation"], d["records1"][i]["explanation"]],
                     "scores": [float(s0[i]), float(s1[i])]})
    return rows
