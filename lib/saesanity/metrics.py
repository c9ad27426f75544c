"""SAE quality metrics, each with one written definition.

Shapes: x, x̂ [B, D] (rows are tokens), z [B, F] latents.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def fvu(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained, centred on the batch mean:

        FVU = Σ_b ‖x_b − x̂_b‖² / Σ_b ‖x_b − x̄‖²,   x̄ = (1/B) Σ_b x_b.

    1 − FVU is the explained variance. It equals SAELens ≥ 6's `explained_variance` (pooled over the
    data); it differs from SAELens's `explained_variance_legacy` (a mean of per-token ratios,
    `explained_variance_saelens_legacy`) and from SAEBench's core-eval formula, whose "total variance"
    subtracts the squared mean of x² rather than ‖x̄‖² (`explained_variance_saebench`) and so is
    nearly uncentred: on data with a large mean it reports far more variance explained.
    """
    if x_BD.shape != x_hat_BD.shape or x_BD.ndim != 2:
        raise ValueError(f"fvu needs two [B, D] tensors of one shape, got {tuple(x_BD.shape)} and {tuple(x_hat_BD.shape)}")
    total = (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum()
    return (x_BD - x_hat_BD).pow(2).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def l0(z_BF: torch.Tensor) -> torch.Tensor:
    """Mean number of non-zero latents per token: L0 = (1/B) Σ_b #{f : z_bf ≠ 0}."""
    return (z_BF != 0).sum(1).float().mean()


def firing_frequency(z_BF: torch.Tensor) -> torch.Tensor:
    """[F] fraction of tokens on which each latent is active: (1/B) Σ_b 1[z_bf ≠ 0]."""
    return (z_BF != 0).float().mean(0)


def dead_fraction(freq_F: torch.Tensor | np.ndarray) -> float:
    """Fraction of latents that never fire on the evaluated tokens: (1/F) #{f : freq_f = 0}, with freq
    from `firing_frequency` pooled over every evaluated token (not a training-time window)."""
    return float((torch.as_tensor(freq_F) == 0).float().mean())


def cosine_sim(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the cosine between input and reconstruction: (1/B) Σ_b ⟨x_b, x̂_b⟩/(‖x_b‖‖x̂_b‖),
    a zero-norm row counting as cosine 0 (SAELens `cossim` divides by the raw norms)."""
    return F.cosine_similarity(x_BD, x_hat_BD, dim=1, eps=1e-12).mean()


def l1_norm(z_BF: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of the L1 norm of the latents: (1/B) Σ_b Σ_f |z_bf| (SAELens `l1`, for z ≥ 0)."""
    return z_BF.abs().sum(1).mean()


def _legacy_terms(x_BD: torch.Tensor, x_hat_BD: torch.Tensor, mean_1D: torch.Tensor) -> torch.Tensor:
    """[B] 1 − ‖x_b − x̂_b‖² / ‖x_b − x̄‖²: the per-token terms of `explained_variance_saelens_legacy`."""
    return 1 - (x_BD - x_hat_BD).pow(2).sum(1) / (x_BD - mean_1D).pow(2).sum(1)


def explained_variance_saelens_legacy(x_BD: torch.Tensor, x_hat_BD: torch.Tensor,
                                      mean_1D: torch.Tensor | None = None) -> torch.Tensor:
    """SAELens's `explained_variance_legacy`, for comparison only: the mean over tokens of
    1 − ‖x_b − x̂_b‖² / ‖x_b − x̄‖², x̄ the batch mean (or `mean_1D`, [1, D], e.g. an evaluation set's
    mean). A token near the mean gets a huge ratio."""
    return _legacy_terms(x_BD, x_hat_BD, x_BD.mean(0, keepdim=True) if mean_1D is None else mean_1D).mean()


def explained_variance_saebench(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """SAEBench's core-eval `explained_variance` (from dictionary_learning), for comparison only:
    1 − E_b‖x_b − x̂_b‖² / (E_b‖x_b‖² − m²), m = mean over tokens and dimensions of x². Subtracting
    m² instead of ‖x̄‖² leaves the denominator close to E‖x‖², i.e. almost uncentred."""
    m = x_BD.pow(2).mean()
    return 1 - (x_BD - x_hat_BD).pow(2).sum(1).mean() / (x_BD.pow(2).sum(1).mean() - m * m)


class Pooled:
    """This module's metrics pooled over an evaluation set fed batch by batch (`update`), each as its
    definition above applied to all the rows at once, with x̄ the whole set's mean (`mean_1D`, [1, D]):

    - fvu = Σ‖x − x̂‖² / Σ‖x − x̄‖² (`fvu`, the set's mean as centre);
    - l0, l1, cosine: means over rows (`l0`, `l1_norm`, `cosine_sim`);
    - frequency [F] (`firing_frequency` over all rows) and dead_frac from it (`dead_fraction`);
    - explained_variance_saelens_legacy: the mean over rows of `_legacy_terms` with x̄ the set's mean;
    - explained_variance_saebench: `explained_variance_saebench` with every expectation over all rows.

    Sums are accumulated in Python floats (double precision) batch by batch, so the result does not
    depend on the batch size beyond float rounding inside a batch. One pass (`runs.evaluate_all`) gives
    every number the notebooks report.
    """

    def __init__(self, mean_1D: torch.Tensor, n_latents: int):
        self.mean = mean_1D
        self.n = 0
        self.sums = dict.fromkeys(("err", "tot", "l0", "l1", "cos", "legacy", "sq", "m2"), 0.0)
        self.fired = torch.zeros(n_latents, device=mean_1D.device)

    def update(self, x_BD: torch.Tensor, x_hat_BD: torch.Tensor, z_BF: torch.Tensor) -> None:
        b, s = x_BD.shape[0], self.sums
        self.n += b
        s["err"] += float((x_BD - x_hat_BD).pow(2).sum())
        s["tot"] += float((x_BD - self.mean).pow(2).sum())
        s["l0"] += float(l0(z_BF)) * b
        s["l1"] += float(l1_norm(z_BF)) * b
        s["cos"] += float(cosine_sim(x_BD, x_hat_BD)) * b
        s["legacy"] += float(_legacy_terms(x_BD, x_hat_BD, self.mean).sum())
        s["sq"] += float(x_BD.pow(2).sum())
        s["m2"] += float(x_BD.pow(2).mean()) * b
        self.fired += firing_frequency(z_BF) * b

    def result(self) -> dict:
        """Every pooled metric (keys as in the class docstring), plus n_tokens; `frequency` is a numpy array."""
        if self.n == 0:
            raise ValueError("Pooled.result: no rows were evaluated")
        n, s = self.n, self.sums
        m = s["m2"] / n  # SAEBench: E‖x‖² − (mean x²)², pooled the same way
        freq = (self.fired / n).cpu()
        return {"fvu": s["err"] / s["tot"], "l0": s["l0"] / n, "l1": s["l1"] / n, "cosine": s["cos"] / n,
                "dead_frac": dead_fraction(freq), "explained_variance_saelens_legacy": s["legacy"] / n,
                "explained_variance_saebench": 1 - (s["err"] / n) / (s["sq"] / n - m * m), "n_tokens": n,
                "frequency": freq.numpy()}


def ce_loss_score(ce_clean: float, ce_sae: float, ce_zero: float) -> float:
    """Fraction of the cross-entropy lost to zero-ablating the hookpoint that the SAE recovers:

        (CE_zero − CE_sae) / (CE_zero − CE_clean)

    with CE the mean next-token cross-entropy of the model run clean, with the hookpoint's activations
    replaced by the SAE's reconstruction, and with them replaced by zeros (SAELens `ce_loss_score`).
    1 = the SAE loses nothing; 0 = as bad as zero-ablation. Ill-conditioned when CE_zero ≈ CE_clean
    (a model that does not use the hookpoint, e.g. a random one): NaN when they are equal."""
    gap = ce_zero - ce_clean
    return (ce_zero - ce_sae) / gap if gap != 0 else math.nan


def kl_score(kl_sae: float, kl_zero: float) -> float:
    """(KL_zero − KL_sae) / KL_zero, KL = mean over tokens of KL(p_clean ‖ p_spliced) of the next-token
    distributions (SAELens `kl_div_score`); NaN when zero-ablation changes nothing (KL_zero = 0)."""
    return (kl_zero - kl_sae) / kl_zero if kl_zero != 0 else math.nan


def kl_next_token(logits_clean_BV: torch.Tensor, logits_new_BV: torch.Tensor) -> torch.Tensor:
    """[B] KL(p_clean ‖ p_new) = Σ_v p_clean(v) (log p_clean(v) − log p_new(v)) per position, in nats."""
    lp_clean = F.log_softmax(logits_clean_BV.float(), -1)
    lp_new = F.log_softmax(logits_new_BV.float(), -1)
    return (lp_clean.exp() * (lp_clean - lp_new)).sum(-1)


def token_entropy(top_tokens_FN: np.ndarray) -> np.ndarray:
    """[F] entropy in bits of each latent's token distribution over its top activations:

        H_f = −Σ_t p_f(t) log₂ p_f(t),   p_f(t) = (1/N) #{n : top_tokens[f, n] = t}

    where top_tokens[f] holds the token ids at latent f's N highest activations over the evaluated
    tokens (`runs.top_activation_tokens`). 0 bits: the latent fires on one token only; log₂ N: every
    top activation is on a different token. Heap et al.'s "abstractness": a latent tied to single
    tokens has low entropy. Rows with fewer than N activations are padded with −1, which is ignored
    (the distribution is over the valid entries; a latent with none gets NaN)."""
    top = np.asarray(top_tokens_FN)
    out = np.full(top.shape[0], np.nan)
    for f, row in enumerate(top):
        row = row[row >= 0]
        if row.size:
            _, counts = np.unique(row, return_counts=True)
            p = counts / row.size
            out[f] = float(-(p * np.log2(p)).sum()) + 0.0
    return out


def ngram_keys(seqs_BT: np.ndarray, order: int, drop_first: int = 1, vocab: int | None = None) -> np.ndarray:
    """[B·(T − drop_first)] int64 key per activation row of the sequences `seqs_BT` (rows in sequence order,
    the first `drop_first` positions of each sequence dropped, as `runs.row_tokens` lays them out): the token
    id (order 1) or (previous id, id) packed into one integer, previous·vocab + id (order 2; needs
    drop_first >= 1). `vocab` (default: the largest id + 1) must be the same for keys that are compared, e.g.
    a training and an evaluation split."""
    seqs = np.asarray(seqs_BT, dtype=np.int64)
    if seqs.ndim != 2 or order not in (1, 2) or (order == 2 and drop_first < 1) or drop_first >= seqs.shape[1]:
        raise ValueError(f"ngram_keys needs [B, T] token ids, order 1 or 2, and 0 <= drop_first < T (>= 1 for a "
                         f"bigram); got shape {seqs.shape}, order={order}, drop_first={drop_first}")
    cur = seqs[:, drop_first:]
    if order == 1:
        return cur.reshape(-1)
    V = int(seqs.max()) + 1 if vocab is None else int(vocab)
    if V <= seqs.max():
        raise ValueError(f"vocab={V} but the sequences hold token id {int(seqs.max())}")
    return (seqs[:, drop_first - 1:-1] * V + cur).reshape(-1)


LOOKUP_LAMBDAS = (0.0, 1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, math.inf)  # the shrinkage grid `lookup_lambdas` searches


def _key_stats(X: torch.Tensor, train_key: np.ndarray, target_key: np.ndarray):
    """Rows of the target keys seen in training, their keys' training sums [R, D] and counts [R]."""
    uniq, inv = np.unique(train_key, return_inverse=True)
    sums = torch.zeros(uniq.size, X.shape[1], dtype=X.dtype).index_add_(0, torch.from_numpy(inv.reshape(-1)), X)
    counts = np.bincount(inv.reshape(-1), minlength=uniq.size)
    pos = np.searchsorted(uniq, target_key).clip(0, uniq.size - 1)
    seen = uniq[pos] == target_key
    idx = pos[seen]
    return torch.from_numpy(np.flatnonzero(seen)), sums[torch.from_numpy(idx)], \
        torch.from_numpy(counts[idx]).to(X.dtype)[:, None]


def _check_keys(n_train: int, train_keys, n_eval: int, eval_keys):
    """The keyings match in number and have one key per row of their split (n_train, n_eval rows)."""
    if len(train_keys) != len(eval_keys) or not train_keys:
        raise ValueError(f"one or more keyings, the same for train and eval; got {len(train_keys)} and {len(eval_keys)}")
    for tk, ek in zip(train_keys, eval_keys):
        if np.asarray(tk).shape[0] != n_train or np.asarray(ek).shape[0] != n_eval:
            raise ValueError(f"keys must have one entry per row: {np.asarray(tk).shape[0]} train keys for "
                             f"{n_train} rows, {np.asarray(ek).shape[0]} eval keys for {n_eval} rows")


def _lookup_predict(X: torch.Tensor, train_keys, target_keys, lambdas, m: int) -> torch.Tensor:
    """[m, D] float64 the shrunken back-off prediction `lookup_fvu` defines, for the m rows keyed by
    `target_keys`."""
    pred = X.mean(0, keepdim=True).expand(m, X.shape[1]).clone()
    for tk, ek, lam in zip(train_keys, target_keys, lambdas):
        if math.isinf(lam):
            continue
        rows, s, n = _key_stats(X, np.asarray(tk), np.asarray(ek))
        pred[rows] = (s + lam * pred[rows]) / (n + lam)
    return pred


def lookup_lambdas(train_x_ND: np.ndarray, train_keys: list[np.ndarray], folds: int = 2,
                   grid: tuple[float, ...] = LOOKUP_LAMBDAS) -> list[float]:
    """The shrinkage λ_l of each keying for `lookup_fvu`, by cross-validation on the training rows alone: the
    rows are cut into `folds` contiguous blocks (rows in sequence order, so a block is whole documents, nearly),
    each block is predicted from the others, and λ_1, then λ_2 with λ_1 fixed, … is the value of `grid` with the
    least pooled held-out squared error (ties: the larger λ). λ = ∞ drops a keying (its back-off alone)."""
    X = torch.as_tensor(np.asarray(train_x_ND), dtype=torch.float64)
    keys = [np.asarray(k) for k in train_keys]
    if folds < 2 or X.shape[0] < folds:
        raise ValueError(f"lookup_lambdas needs folds >= 2 and at least one row per fold; got folds={folds} for "
                         f"{X.shape[0]} rows")
    _check_keys(X.shape[0], keys, X.shape[0], keys)
    bounds = np.linspace(0, X.shape[0], folds + 1).astype(int)
    splits = [(np.r_[0:a, b:X.shape[0]], np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    chosen: list[float] = []
    for level in range(len(keys)):
        err = np.zeros(len(grid))
        for fit, held in splits:
            Xf, Yh = X[fit], X[held]
            prev = _lookup_predict(Xf, [k[fit] for k in keys[:level]], [k[held] for k in keys[:level]], chosen,
                                   held.size)
            rows, s, n = _key_stats(Xf, keys[level][fit], keys[level][held])
            unseen = np.ones(held.size, bool)
            unseen[rows.numpy()] = False
            err += float((Yh[unseen] - prev[unseen]).pow(2).sum())  # these rows keep their back-off at any λ
            # a seen row's blend (n·m + λ·p)/(n + λ), m = S/n: its error is exactly
            # (n²·‖m − y‖² + 2nλ·⟨m − y, p − y⟩ + λ²·‖p − y‖²) / (n + λ)², so every λ costs O(rows), not O(rows · D)
            y, p = Yh[rows], prev[rows]
            dm, dp = s / n - y, p - y
            A, B, C, nn = dm.pow(2).sum(1), (dm * dp).sum(1), dp.pow(2).sum(1), n[:, 0]
            del dm, dp, y, p, s
            for i, lam in enumerate(grid):
                err[i] += float(C.sum()) if math.isinf(lam) else \
                    float(((nn ** 2 * A + 2 * nn * lam * B + lam ** 2 * C) / (nn + lam) ** 2).sum())
        if not np.isfinite(err).all():
            raise ValueError(f"lookup_lambdas: non-finite cross-validation error {err.tolist()} (NaN or inf in the "
                             "activations?)")
        best = err.min()
        chosen.append(max(lam for lam, e in zip(grid, err) if e <= best + 1e-12 * abs(best)))
    return chosen


def lookup_fvu(train_x_ND: np.ndarray, train_keys: list[np.ndarray], eval_x_MD: np.ndarray,
               eval_keys: list[np.ndarray], lambdas: list[float] | None = None) -> float:
    """FVU (`fvu`, on the evaluation rows) of the token-lookup null: each evaluation row is predicted by the
    training activations of the rows with its key, for the keyings `train_keys` / `eval_keys` (the same
    keyings, most specific last, e.g. [unigram, bigram] from `ngram_keys`), each shrunk toward the one before:

        p_0 = x̄ (the global training mean),   p_l = (S_l + λ_l · p_{l−1}) / (n_l + λ_l)

    where n_l and S_l are the count and the sum of the training rows sharing the row's key at level l (a key
    unseen in training: p_l = p_{l−1}). λ_l = 0 is the plain per-key mean, λ_l = ∞ ignores the keying; in
    between, a key seen n times is trusted n / (n + λ) — the empirical-Bayes (James–Stein) form, where
    λ = within-key noise / between-key variance does not depend on n. `lambdas` default: `lookup_lambdas`,
    chosen by cross-validation on the training rows (never on the evaluation rows), so that rare keys' noisy
    means do not make the null worse than the mean (an FVU above 1). A reconstruction no better than this
    explains nothing a lookup table of tokens (and their predecessors) would not: what random-transformer SAEs
    are suspected of learning."""
    Y = torch.as_tensor(np.asarray(eval_x_MD), dtype=torch.float64)
    return float(fvu(Y, lookup_predict(train_x_ND, train_keys, eval_keys, lambdas, Y.shape[0])))


def lookup_predict(train_x_ND: np.ndarray, train_keys: list[np.ndarray], eval_keys: list[np.ndarray],
                   lambdas: list[float] | None, m: int) -> torch.Tensor:
    """[m, D] float64 the lookup null's prediction of the m evaluation rows keyed by `eval_keys` (`lookup_fvu`
    defines it; its FVU is `fvu(eval_x, lookup_predict(…))`, e.g. over shards for a noise floor)."""
    X = torch.as_tensor(np.asarray(train_x_ND), dtype=torch.float64)
    _check_keys(X.shape[0], train_keys, m, eval_keys)
    lam = lookup_lambdas(X, train_keys) if lambdas is None else list(lambdas)
    if len(lam) != len(train_keys) or any(not (v >= 0) for v in lam):
        raise ValueError(f"one lambda >= 0 per keying; got {lam} for {len(train_keys)} keyings")
    return _lookup_predict(X, train_keys, eval_keys, lam, m)


NOISE_SHARDS = 5  # held-out shards a reported metric is remeasured on (`shard_spread`, `stitching.Stitcher`): its noise floor


def shards(rows: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """`rows` cut into `n_shards` equal contiguous shards (views; the remainder dropped): the held-out data a
    metric is remeasured on for its noise floor (`shard_spread`)."""
    if n_shards < 2 or rows.shape[0] < n_shards:
        raise ValueError(f"a noise floor needs n_shards >= 2 and at least one row a shard; got n_shards={n_shards} "
                         f"for {rows.shape[0]} rows")
    size = rows.shape[0] // n_shards
    return [rows[i * size:(i + 1) * size] for i in range(n_shards)]


def shard_spread(fn, rows: np.ndarray, n_shards: int) -> dict:
    """A metric's noise floor over evaluation data: `fn(shard)` on each of `shards(rows, n_shards)`. Returns
    {"mean", "sd" (ddof 1), "values"}: the sd of a metric measured on 1/n_shards of the rows; the full-data
    number's own standard error is about sd / √n_shards."""
    return spread([fn(s) for s in shards(rows, n_shards)])


def seed_spread(fn, seeds, keys) -> dict:
    """A run's noise floor over its seeds: `fn(seed)` (a dict) for each of `seeds`; returns the first seed's dict
    with, for each of `keys`, `<key>_seed_sd` and `<key>_seed_values` (`spread` of that number over the seeds)."""
    rows = [fn(s) for s in seeds]
    out = dict(rows[0])
    for k in keys:
        sp = spread(r[k] for r in rows)
        out[f"{k}_seed_sd"], out[f"{k}_seed_values"] = sp["sd"], sp["values"]
    return out


def shared_effects_spread(values, members) -> dict:
    """The noise floor of one number of a design whose numbers share their runs — a seed pair's shared fraction
    (members (i, j): pairs of n seeds share a seed) or a stitched pair of SAEs ((small seed, large seed)). Model:
    each number = μ + Σ its members' effects (iid, variance σ²) + its own noise (σ_e²), so one number varies by
    m σ² + σ_e² (m members each), but the spread of the design's numbers, E[s²] = σ_e² + κ σ², sees only
    κ = (tr C − 1ᵀC1/N) / (N − 1) of σ² (C_uv = members shared by numbers u and v): less than m, as shared
    members move numbers together (n seeds' pairs: κ = 1, 4/3, 1.6 at n = 3, 5, 9; the 2 × 2 combinations: 4/3).
    Whatever σ² and σ_e² are, one number's sd is at most s·√(max(m/κ, 1)): that bound is "sd", the design's own
    spread "spread_sd" (`spread`'s "mean", "values" beside them)."""
    sp = spread(values)
    sets = [frozenset(m) for m in members]
    if len(sets) != len(sp["values"]) or len({len(m) for m in sets}) != 1:
        raise ValueError(f"shared_effects_spread needs one member set of one size per value; got {len(sets)} sets "
                         f"of sizes {sorted({len(m) for m in sets})} for {len(sp['values'])} values")
    C = np.array([[len(a & b) for b in sets] for a in sets], dtype=float)
    kappa = (np.trace(C) - C.sum() / C.shape[0]) / (C.shape[0] - 1)
    factor = max(len(sets[0]) / kappa, 1.0) if kappa > 0 else float("inf")
    return {"mean": sp["mean"], "sd": sp["sd"] * math.sqrt(factor), "spread_sd": sp["sd"],
            "sd_factor": math.sqrt(factor), "values": sp["values"]}


def spread(values) -> dict:
    """{"mean", "sd" (ddof 1), "values"} of one metric remeasured n >= 2 times — over held-out shards
    (`shard_spread`) or over training seeds (the meta-SAEs' `stitching.meta_family`): its noise floor."""
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise ValueError(f"a spread needs at least 2 values; got {len(vals)}")
    return {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)), "values": vals}


def beyond_noise(a: float, b: float, sd_a: float, sd_b: float, z: float = 2.0) -> bool:
    """Whether two numbers differ by more than `z` combined standard deviations, |a − b| > z √(sd_a² + sd_b²):
    a smaller difference is not called one. Unpaired and on the sd of one shard, so conservative; for two
    metrics measured on the same shards `paired_beyond_noise` is the test."""
    return bool(abs(a - b) > z * math.hypot(sd_a, sd_b))


def paired_beyond_noise(a_values, b_values, alpha: float = 0.05) -> bool:
    """Whether two metrics measured on the same n shards (`shard_spread`'s "values", in the same order) differ
    beyond noise, paired: the shard differences d_i = a_i − b_i, a two-sided t-test of mean 0 at level `alpha`,

        |d̄| > t_{1−α/2, n−1} · sd(d) / √n        (sd with ddof 1; t_{0.975, 4} = 2.78 for 5 shards)

    — scipy's `ttest_rel`. The variation the two share from shard to shard (hard text, massive activations)
    cancels in d, which the unpaired `beyond_noise` cannot see. All differences equal and non-zero: beyond."""
    from scipy.stats import t

    a, b = np.asarray(a_values, dtype=float), np.asarray(b_values, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"paired_beyond_noise needs two lists of >= 2 shard values of one length; got {a.shape} "
                         f"and {b.shape}")
    d = a - b
    sd = float(np.std(d, ddof=1))
    if sd == 0:
        return bool(d.mean() != 0)
    return bool(abs(d.mean()) > t.ppf(1 - alpha / 2, d.size - 1) * sd / math.sqrt(d.size))
