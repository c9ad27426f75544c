"""Activating and non-activating contexts of a latent, drawn delphi-style by activation quantile.

Windows. The held-out activation rows come from sequences of `seq_len` tokens whose first
`drop_first` positions were dropped (`activations.ActivationSpec`), so a sequence contributes
`per_seq = seq_len − drop_first` consecutive rows. Each sequence's rows are tiled into non-overlapping
windows of `ctx_len` tokens (a remainder shorter than `ctx_len` is not used); a window is one example,
and its activation is the latent's activation at each of its tokens. A window is *activating* when
its maximum activation is > 0.

Sampling (per latent, seeded by (seed, latent)): activating windows are sorted by their maximum
activation and split into `n_quantiles` bins of (nearly) equal count; the explanation set takes
`n_explain` windows spread evenly over the bins, the scoring set takes `n_score_act` other windows
spread the same way (so scoring sees the whole activation distribution, not just the top), and
`n_score_non` non-activating windows are drawn uniformly from the windows where the latent is 0.
A latent with fewer than `n_explain + n_score_act` activating windows is not eligible.

Latent activations are stored sparsely (`LatentActs`: for each latent the rows where it is non-zero
and the values there, sorted by latent), built once per (SAE, activation artifact) and cached, so
drawing examples for any latent afterwards costs only an index lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cache import cached

_LATENT_ACTS_VERSION = 1


@dataclass
class LatentActs:
    """Sparse latent activations over `n_rows` activation rows: latent f is non-zero at rows
    `rows[offsets[f]:offsets[f+1]]` with values `values[...]` (rows ascending within a latent)."""

    offsets: np.ndarray  # [F+1] int64
    rows: np.ndarray  # [nnz] int64
    values: np.ndarray  # [nnz] float32
    n_rows: int

    @property
    def n_latents(self) -> int:
        return len(self.offsets) - 1

    def of(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[f], self.offsets[f + 1]
        return self.rows[a:b], self.values[a:b]

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_triples(cls, rows: np.ndarray, latents: np.ndarray, values: np.ndarray, n_latents: int,
                     n_rows: int) -> "LatentActs":
        order = np.lexsort((rows, latents))
        offsets = np.zeros(n_latents + 1, dtype=np.int64)
        np.cumsum(np.bincount(latents, minlength=n_latents), out=offsets[1:])
        return cls(offsets, rows[order].astype(np.int64), values[order].astype(np.float32), n_rows)


@torch.no_grad()
def encode_sparse(sae, acts: np.ndarray, batch: int = 8192) -> LatentActs:
    """`LatentActs` of `sae.encode` over every row of `acts` [N, d]."""
    rows, lats, vals = [], [], []
    for s in range(0, acts.shape[0], batch):
        z = sae.encode(torch.from_numpy(np.array(acts[s:s + batch], dtype=np.float32)))
        r, f = torch.nonzero(z > 0, as_tuple=True)
        rows.append((r + s).numpy())
        lats.append(f.numpy())
        vals.append(z[r, f].numpy())
    cat = lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)  # noqa: E731
    return LatentActs.from_triples(cat(rows, np.int64), cat(lats, np.int64), cat(vals, np.float32),
                                   sae.W_dec.shape[0], int(acts.shape[0]))


def latent_acts_cached(sae, sae_path: Path, acts: np.ndarray, acts_dir: Path) -> LatentActs:
    """`encode_sparse(sae, acts)`, cached under (SAE artifact, activation artifact)."""

    def compute(work: Path) -> dict:
        la = encode_sparse(sae, acts)
        np.savez(work / "latent_acts.npz", offsets=la.offsets, rows=la.rows, values=la.values)
        return {"nnz": int(la.rows.size), "n_rows": la.n_rows}

    path = cached("latent_acts", {"sae": Path(sae_path).name, "acts": Path(acts_dir).name}, compute,
                  version=_LATENT_ACTS_VERSION)
    with np.load(path / "latent_acts.npz") as z:
        return LatentActs(z["offsets"], z["rows"], z["values"], int(acts.shape[0]))


@dataclass(frozen=True)
class Windows:
    """The tiling of activation rows into `ctx_len`-token windows (module docstring)."""

    tokens: np.ndarray  # [n_seq, seq_len] token ids of the held-out sequences
    drop_first: int
    ctx_len: int
    n_rows: int

    @property
    def per_seq(self) -> int:
        return self.tokens.shape[1] - self.drop_first

    @property
    def per_seq_windows(self) -> int:
        return self.per_seq // self.ctx_len

    @property
    def n_windows(self) -> int:
        full_seqs = self.n_rows // self.per_seq
        tail = (self.n_rows % self.per_seq) // self.ctx_len
        return min(full_seqs * self.per_seq_windows + tail, self.tokens.shape[0] * self.per_seq_windows)

    def window_of_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window index, position in window) of each row; window −1 for rows in no window."""
        seq, off = np.divmod(rows, self.per_seq)
        j, pos = np.divmod(off, self.ctx_len)
        w = np.where(j < self.per_seq_windows, seq * self.per_seq_windows + j, -1)
        return np.where(w < self.n_windows, w, -1), pos

    def window_tokens(self, w: int) -> np.ndarray:
        seq, j = divmod(int(w), self.per_seq_windows)
        start = self.drop_first + j * self.ctx_len
        return self.tokens[seq, start:start + self.ctx_len]


@dataclass
class Example:
    window: int
    tokens: np.ndarray  # [ctx_len] token ids
    acts: np.ndarray  # [ctx_len] latent activation at each token (0 for a non-activating example)

    @property
    def max_act(self) -> float:
        return float(self.acts.max()) if self.acts.size else 0.0


@dataclass
class LatentExamples:
    latent: int
    explain: list[Example]
    score_act: list[Example]
    score_non: list[Example]
    n_active_windows: int


def window_acts(la: LatentActs, win: Windows, f: int) -> dict[int, np.ndarray]:
    """window -> [ctx_len] activations of latent f, for every window where it fires."""
    rows, vals = la.of(f)
    w, pos = win.window_of_rows(rows)
    out: dict[int, np.ndarray] = {}
    for wi, p, v in zip(w[w >= 0], pos[w >= 0], vals[w >= 0]):
        out.setdefault(int(wi), np.zeros(win.ctx_len, np.float32))[p] = v
    return out


def _spread(bins: list[np.ndarray], n: int, rng: np.random.Generator) -> tuple[list[int], list[np.ndarray]]:
    """Draw n items spread evenly over `bins` (extra ones from the highest bins); returns the picks
    and the bins with the picks removed. A bin with too few items gives what it has, and the
    shortfall is drawn from the others."""
    k = len(bins)
    want = [n // k + (1 if i < n % k else 0) for i in range(k)]
    picks, rest = [], []
    short = 0
    for b, m in zip(bins, want):
        take = rng.permutation(len(b))
        got = min(m, len(b))
        short += m - got
        picks.extend(b[take[:got]].tolist())
        rest.append(b[take[got:]])
    for i in range(k):
        if short == 0:
            break
        got = min(short, len(rest[i]))
        picks.extend(rest[i][:got].tolist())
        rest[i], short = rest[i][got:], short - got
    return picks, rest


def sample_examples(la: LatentActs, win: Windows, f: int, *, n_explain: int, n_score_act: int, n_score_non: int,
                    n_quantiles: int = 10, seed: int = 0) -> LatentExamples | None:
    """Explanation and scoring examples of latent f (module docstring); None if it is not eligible."""
    wa = window_acts(la, win, f)
    if len(wa) < n_explain + n_score_act:
        return None
    rng = np.random.default_rng([seed, f])
    ws = np.array(sorted(wa, key=lambda w: -wa[w].max()))
    bins = [b for b in np.array_split(ws, min(n_quantiles, len(ws)))]
    expl, rest = _spread(bins, n_explain, rng)
    score, _ = _spread(rest, n_score_act, rng)
    active = np.zeros(win.n_windows, bool)
    active[list(wa)] = True
    quiet = np.flatnonzero(~active)
    non = rng.choice(quiet, size=min(n_score_non, quiet.size), replace=False)
    mk = lambda w, a: Example(int(w), win.window_tokens(w), a)  # noqa: E731
    zeros = np.zeros(win.ctx_len, np.float32)
    return LatentExamples(f, [mk(w, wa[w]) for w in sorted(expl, key=lambda w: -wa[w].max())],
                          [mk(w, wa[w]) for w in score], [mk(w, zeros) for w in non], len(wa))


def eligible_latents(la: LatentActs, win: Windows, min_windows: int) -> np.ndarray:
    """Latents with at least `min_windows` activating windows (counted exactly)."""
    out = []
    for f in np.flatnonzero(la.counts() >= min_windows):
        w, _ = win.window_of_rows(la.of(f)[0])
        if np.unique(w[w >= 0]).size >= min_windows:
            out.append(f)
    return np.array(out, dtype=np.int64)


# ---- synthetic latents of known meaning, for calibrating the pipeline ----

def rule_test(rule: str):
    """The predicate on a token's text (stripped) of one rule: `digit` (contains a digit), `capitalised`
    (starts with an upper-case letter), `word:<w>` (is the word w, case-insensitive), `punct:<c>` (contains c)."""
    kind, _, arg = rule.partition(":")
    if kind == "digit" and not arg:
        return lambda t: any(c.isdigit() for c in t)
    if kind == "capitalised" and not arg:
        return lambda t: t[:1].isupper() and t[:1].isalpha()
    if kind == "word" and arg:
        return lambda t: t.lower() == arg.lower()
    if kind == "punct" and arg:
        return lambda t: arg in t
    raise ValueError(f"rule {rule!r}; valid: 'digit', 'capitalised', 'word:<w>', 'punct:<c>'")


def rule_acts(token_strings: list[str], tokens_flat: np.ndarray, rules: list[str], n_noise: int,
              noise_rate: float, seed: int = 0) -> tuple[LatentActs, list[str]]:
    """Synthetic `LatentActs` over the rows of `tokens_flat` [N] (token id per activation row):
    one latent per rule (`rule_test`), activation 1 on the tokens it accepts, then `n_noise` latents
    firing on uniformly random rows at rate `noise_rate` with Uniform(0.1, 1) values.
    Returns the activations and a name per latent (the rule, or `noise i`)."""
    s = [t.strip() for t in token_strings]
    rows, lats, vals = [], [], []
    for f, rule in enumerate(rules):
        test = rule_test(rule)
        r = np.flatnonzero(np.array([test(t) for t in s])[tokens_flat])
        rows.append(r), lats.append(np.full(r.size, f)), vals.append(np.ones(r.size, np.float32))
    rng = np.random.default_rng(seed)
    n = tokens_flat.size
    for i in range(n_noise):
        r = np.flatnonzero(rng.random(n) < noise_rate)
        rows.append(r), lats.append(np.full(r.size, len(rules) + i)), vals.append(rng.uniform(0.1, 1, r.size))
    names = list(rules) + [f"noise {i}" for i in range(n_noise)]
    return (LatentActs.from_triples(np.concatenate(rows), np.concatenate(lats), np.concatenate(vals).astype(np.float32),
                                    len(names), n), names)


def piece_table(tokenizer) -> list[str]:
    """The text of every token id on its own (leading space kept), for rendering examples."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in vocab]


def render(pieces: list[str], tokens: np.ndarray) -> list[str]:
    return [pieces[int(t)] if 0 <= int(t) < len(pieces) else "" for t in tokens]
