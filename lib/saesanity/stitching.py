"""Leask et al. (2025): novel vs reconstruction latents across dictionary sizes, SAE stitching, meta-SAEs.

Definitions (S the smaller SAE, L the larger, both on the same activations; directions are unit decoder rows):

* **max decoder cosine** of a latent j of L: max_i cos(W_dec_L[j], W_dec_S[i]).
* **novel latent** of L: max decoder cosine < θ; **reconstruction latent**: ≥ θ.
* **groups**: the connected components of the bipartite graph whose nodes are the latents of S and L
  and whose edges join (i ∈ S, j ∈ L) with cos(W_dec_S[i], W_dec_L[j]) ≥ θ. A component with latents of
  both SAEs is a *swap group*; an L-only component is a novel latent; an S-only component is a latent
  of S with no counterpart in L ("dropped").
* **stitched SAE**: a set of S latents and a set of L latents used together. Each SAE encodes x with
  its own encoder (so each latent's activation is what it is in its own SAE; TopK selection happens
  inside each SAE), the kept latents are decoded with their own decoder rows, and the decoder bias is
  S's throughout. x̂ = Σ_{i ∈ kept S} z_S,i W_dec_S[i] + Σ_{j ∈ added L} z_L,j W_dec_L[j] + b_dec_S.
* **x**: the activation as both SAEs were trained on it, `SAEBase.transform_input` of the collected one
  (for SAELens's GPT-2 releases, trained under TransformerLens's `center_writing_weights`, the raw
  activation minus its per-token mean over d_model; for our own SAEs the raw activation itself).
* **MSE**: mean over tokens of ‖x − x̂‖² (summed over dimensions); **L0**: mean over tokens of the number
  of non-zero kept latents. (FVU divides the MSE by the mean squared distance to the evaluation mean.)
* **insertion**: S plus a set of L latents; ΔMSE of inserting a single latent j is
  mean_t[(r_t − z_t,j w_j)² − r_t²] = mean_t[z_t,j² − 2 z_t,j (r_t · w_j)], r = x − x̂_S.
* **swap path**: from S, visit every component of the cosine graph once, in a seeded random order — a
  swap group, a novel latent or a dropped latent — removing its S latents and adding its L latents; the
  end point has exactly L's latents (with S's decoder bias). MSE and L0 are traced after every step.
  (Visiting the novel and dropped latents interleaved with the groups, rather than all at the end,
  makes the midpoint of the path a mixture of the two SAEs: where most latents are novel, adding them
  all before dropping S's unmatched ones would double-count the reconstruction.)
* **meta-SAE**: a BatchTopK SAE trained on the unit decoder rows of a base SAE (each row one training
  example, `epochs` passes in a seeded order); its *decoder FVU* is `metrics.fvu` of the rows it
  reconstructs, and a meta-latent *groups* the base latents on which it is active. Its *noise floor* is the
  sd of that FVU over `META_NOISE_SEEDS` meta-SAEs of the width trained with successive seeds on the same rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .cache import cached
from .matching import cosine_matrix, unit_rows
from .metrics import NOISE_SHARDS, beyond_noise, fvu, paired_beyond_noise, shared_effects_spread
from .sae import SAEBase, TrainConfig, load_sae, save_saelens, train_sae

_META_VERSION = 1
_CHUNK_ELEMS = 1 << 25  # numbers in one [rows, latents] block of single-insertion ΔMSEs (128 MB in float32)
META_NOISE_SEEDS = 3  # meta-SAE training seeds behind each width's decoder-FVU noise floor (`meta_family`)


def _dirs(sae: SAEBase) -> torch.Tensor:
    return unit_rows(sae.W_dec.detach().float())


def max_decoder_cos(small: SAEBase, large: SAEBase) -> np.ndarray:
    """[F_L] max decoder cosine of each latent of `large` to any latent of `small`."""
    return cosine_matrix(_dirs(large), _dirs(small)).max(1)


def novel_fraction(max_cos: np.ndarray, thetas: list[float]) -> np.ndarray:
    """Fraction of latents that are novel (max decoder cosine `max_cos` [F_L] < θ) at each θ."""
    return np.array([(max_cos < t).mean() for t in thetas])


def novel_fraction_seeds(P, pairs: list[tuple[int, int]], theta: float, *, progress: bool = True) -> dict | None:
    """The noise floor over training seeds of the novel fraction at `theta` of each size pair (i, j) of `P.sizes`:
    the size family trained with each of `P.seeds[:2]` (`size_family`; Fig. 5's size sweep trains both), and the
    novel fraction of the larger SAE of seed b against the smaller of seed a for the four (a, b) — four
    independent initialisations of the pair (seeds of different sizes draw unaligned directions: `SAEBase`'s
    uniform draw fills [d_in, d_sae] row by row, so a latent's encoder column shares one of d_in entries with the
    same-seed latent of another size). Each SAE is in two of the four, so "sd" is the bound on one combination's
    sd of `metrics.shared_effects_spread` (their own spread × √1.5). Returns {"i→j" (sizes): {"mean", "sd",
    "spread_sd", "values", "combos" ("a→b")}}; None for a release family (one SAE per size) or fewer than 2 seeds."""
    if P.release or len(P.seeds) < 2:
        return None
    seeds = list(P.seeds[:2])
    fams = {s: size_family(dataclasses.replace(P, seeds=[s, *[t for t in P.seeds if t != s]]), progress=progress)
            for s in seeds}
    combos = [(a, b) for a in seeds for b in seeds]
    names = [f"{a}→{b}" for a, b in combos]
    out = {}
    for i, j in pairs:
        vals = [float(novel_fraction(max_decoder_cos(fams[a][i].sae, fams[b][j].sae), [theta])[0]) for a, b in combos]
        out[f"{P.sizes[i]}→{P.sizes[j]}"] = {**shared_effects_spread(vals, _combo_members(names)), "combos": names}
    return out


def _combo_members(combos: list[str]) -> list[tuple]:
    """The SAEs behind each "a→b" seed combination of `novel_fraction_seeds` (the smaller SAE of seed a, the larger
    of seed b), as `metrics.shared_effects_spread` members."""
    return [(("small", a), ("large", b)) for a, b in (c.split("→") for c in combos)]


def novel_mean_spread(seeds_floor: dict, names: list[str]) -> dict:
    """The noise floor of the mean novel fraction over the size pairs `names` of `novel_fraction_seeds`' result:
    that mean for each seed combination, and one combination's sd bound (`metrics.shared_effects_spread`)."""
    combos = seeds_floor[names[0]]["combos"]
    return shared_effects_spread([float(np.mean([seeds_floor[n]["values"][c] for n in names]))
                                  for c in range(len(combos))], _combo_members(combos))


@dataclasses.dataclass
class Groups:
    swap: list[tuple[np.ndarray, np.ndarray]]  # (S latents, L latents) of each swap group
    novel: np.ndarray  # L latents with no S partner above θ
    dropped: np.ndarray  # S latents with no L partner above θ


def groups(small: SAEBase, large: SAEBase, theta: float) -> Groups:
    """Connected components of the cosine graph above θ (module docstring)."""
    C = cosine_matrix(_dirs(small), _dirs(large))  # [F_S, F_L]
    fs, fl = C.shape
    i, j = np.nonzero(C >= theta)
    g = coo_matrix((np.ones(i.size), (i, fs + j)), shape=(fs + fl, fs + fl))
    _, label = connected_components(g, directed=False)
    ls, ll = label[:fs], label[fs:]
    swap = []
    for c in np.intersect1d(ls, ll):
        swap.append((np.flatnonzero(ls == c), np.flatnonzero(ll == c)))
    return Groups(swap, np.flatnonzero(~np.isin(ll, ls)), np.flatnonzero(~np.isin(ls, ll)))


@torch.no_grad()
def _codes(sae: SAEBase, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    return torch.cat([sae.encode(x[s:s + batch]) for s in range(0, x.shape[0], batch)])


class Stitcher:
    """Both SAEs' codes on a fixed set of evaluation rows, for fast stitched MSE / L0 (module docstring)."""

    @torch.no_grad()
    def __init__(self, small: SAEBase, large: SAEBase, acts: np.ndarray, noise_shards: int = NOISE_SHARDS):
        """`acts` [N, D] as collected; x is `small.transform_input(acts)`, which both SAEs must share.
        `noise_shards`: the rows are also cut into that many equal contiguous shards (the remainder in none, as
        `metrics.shard_spread`) and every MSE is remeasured on each (`mse_shards`), for its noise floor; 0: off."""
        n = acts.shape[0]
        if noise_shards and (noise_shards < 2 or n < 2 * noise_shards):
            raise ValueError(f"noise_shards={noise_shards} needs >= 2 shards of >= 2 rows; got {n} rows (0 turns it off)")
        if small.input_transform != large.input_transform:
            raise ValueError(f"the SAEs were trained on different activations (input_transform "
                             f"{small.input_transform!r} vs {large.input_transform!r}); stitching needs one")
        self.x = small.transform_input(torch.from_numpy(np.array(acts, dtype=np.float32)))
        self.zs, self.zl = _codes(small, self.x), _codes(large, self.x)
        self.ws, self.wl = small.W_dec.detach().float(), large.W_dec.detach().float()
        self.b = small.b_dec.detach().float()
        self.var = float((self.x - self.x.mean(0)).pow(2).sum(1).mean())
        self.large_mse = float((self.x - (self.zl @ self.wl + large.b_dec.detach().float())).pow(2).sum(1).mean())
        self.n_shards, self.shard_size = noise_shards, (n // noise_shards if noise_shards else 0)
        self.shard = torch.full((n,), -1, dtype=torch.long)  # each row's shard, -1 for the remainder
        self.shard[: self.shard_size * noise_shards] = torch.arange(self.shard_size * noise_shards) // max(self.shard_size, 1)

    def _shard_sums(self, rows: torch.Tensor, per_row: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[n_shards] float64 sums of `per_row` (values at `rows`) within each shard, added into `out` if given."""
        out = torch.zeros(self.n_shards, dtype=torch.float64) if out is None else out
        sh = self.shard[rows]
        return out.index_add_(0, sh[sh >= 0], per_row[sh >= 0].double())

    @torch.no_grad()
    def evaluate(self, keep_small: np.ndarray, add_large: np.ndarray) -> dict[str, float]:
        ks, al = torch.as_tensor(keep_small, dtype=torch.long), torch.as_tensor(add_large, dtype=torch.long)
        x_hat = self.zs[:, ks] @ self.ws[ks] + self.zl[:, al] @ self.wl[al] + self.b
        sq = (self.x - x_hat).pow(2).sum(1)
        mse = float(sq.mean())
        l0 = float((self.zs[:, ks] != 0).sum(1).float().mean() + (self.zl[:, al] != 0).sum(1).float().mean())
        out = {"mse": mse, "fvu": mse / self.var, "l0": l0}
        if self.n_shards:
            out["mse_shards"] = (self._shard_sums(torch.arange(sq.numel()), sq) / self.shard_size).tolist()
        return out

    @torch.no_grad()
    def _insert_delta_chunks(self, latents: np.ndarray):
        """Each row's ΔMSE of inserting each L latent alone into S (its mean over rows is the ΔMSE), as [N, c]
        blocks of consecutive latents, c chosen so a block holds at most `_CHUNK_ELEMS` numbers (the paper scale,
        200K rows × tens of thousands of latents, never materialises whole)."""
        r = self.x - (self.zs @ self.ws + self.b)
        c = max(1, _CHUNK_ELEMS // max(1, r.shape[0]))
        for s in range(0, len(latents), c):
            idx = torch.as_tensor(np.asarray(latents)[s:s + c], dtype=torch.long)
            z = self.zl[:, idx]
            yield z.pow(2) * self.wl[idx].pow(2).sum(1) - 2 * z * (r @ self.wl[idx].T)

    def single_insert_delta(self, latents: np.ndarray) -> np.ndarray:
        """ΔMSE of inserting each L latent alone into S (module docstring)."""
        return np.concatenate([b.mean(0).numpy() for b in self._insert_delta_chunks(latents)] + [np.zeros(0, np.float32)])

    @torch.no_grad()
    def median_insert_delta_bootstrap(self, latents: np.ndarray, n_boot: int = 200, seed: int = 0) -> dict:
        """The noise floor of median_j ΔMSE_j (`single_insert_delta`) over the evaluation rows: a percentile
        bootstrap over rows (`fits.bootstrap`'s resamples and summary: mean, sd, and the 95% interval lo–hi), each
        resample's ΔMSEs the resampled rows' means (its counts matrix times the rows' ΔMSEs, block by block).
        (Not shards: a median of sparse latents' means on a fifth of the rows is biased toward 0 — a rare latent
        that fires on none of a shard's rows has ΔMSE exactly 0 there.)"""
        from .fits import bootstrap_indices, bootstrap_summary

        if len(latents) == 0:
            raise ValueError("median_insert_delta_bootstrap needs at least one latent")
        n = self.x.shape[0]
        w = torch.from_numpy(np.stack([np.bincount(i, minlength=n) for i in bootstrap_indices(n, n_boot, seed)])
                             .astype(np.float64) / n)  # [n_boot, N]: resample b's mean = w[b] @ per-row values
        means = torch.cat([w @ b.double() for b in self._insert_delta_chunks(latents)], 1)  # [n_boot, len(latents)]
        return bootstrap_summary(np.median(means.numpy(), axis=1))

    @staticmethod
    def _rows_by_latent(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, offsets): the rows where latent j is non-zero are rows[offsets[j]:offsets[j+1]]."""
        r, c = torch.nonzero(z, as_tuple=True)
        order = torch.argsort(c, stable=True)
        offsets = torch.zeros(z.shape[1] + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(torch.bincount(c, minlength=z.shape[1]), 0)
        return r[order], offsets

    @torch.no_grad()
    def swap_path(self, g: Groups, seed: int = 0) -> list[dict]:
        """MSE and L0 after every step of the swap path (module docstring); the first row is S itself.

        A step changes the reconstruction only on the rows where its latents fire, so the residual and
        the running sums of ‖r‖² and of L0 are updated on those rows alone (exact, not approximate)."""
        empty = np.zeros(0, int)
        units = ([("swap", s, l) for s, l in g.swap] + [("novel", empty, np.array([j])) for j in g.novel]
                 + [("dropped", np.array([i]), empty) for i in g.dropped])
        order = np.random.default_rng(seed).permutation(len(units))
        rs, os_ = self._rows_by_latent(self.zs)
        rl, ol = self._rows_by_latent(self.zl)
        n = self.x.shape[0]
        r = self.x - (self.zs @ self.ws + self.b)
        r2 = r.pow(2)
        sq = float(r2.sum(dtype=torch.float64))
        shard_sq = self._shard_sums(torch.arange(n), r2.sum(1, dtype=torch.float64)) if self.n_shards else None
        nnz = float((self.zs != 0).sum())
        n_small, n_large = self.zs.shape[1], 0
        out = [{"step": "small", "mse": sq / n, "l0": nnz / n, "n_small": n_small, "n_large": 0}]
        if shard_sq is not None:
            out[0]["mse_shards"] = (shard_sq / self.shard_size).tolist()
        for u in order:
            kind, ds, dl = units[u]
            ds, dl = torch.as_tensor(ds, dtype=torch.long), torch.as_tensor(dl, dtype=torch.long)
            rows = torch.cat([rs[os_[j]:os_[j + 1]] for j in ds.tolist()] + [rl[ol[j]:ol[j + 1]] for j in dl.tolist()]
                             + [torch.zeros(0, dtype=torch.long)]).unique()
            if rows.numel():
                delta = self.zs[rows][:, ds] @ self.ws[ds] - self.zl[rows][:, dl] @ self.wl[dl]
                before = r[rows]
                after = before + delta
                a2, b2 = after.pow(2), before.pow(2)  # squared once, for the total and the shards' sums
                sq += float(a2.sum(dtype=torch.float64) - b2.sum(dtype=torch.float64))
                if shard_sq is not None:
                    self._shard_sums(rows, a2.sum(1, dtype=torch.float64) - b2.sum(1, dtype=torch.float64), shard_sq)
                r[rows] = after
            nnz += float(sum(ol[j + 1] - ol[j] for j in dl.tolist()) - sum(os_[j + 1] - os_[j] for j in ds.tolist()))
            n_small, n_large = n_small - ds.numel(), n_large + dl.numel()
            out.append({"step": kind, "mse": sq / n, "l0": nnz / n, "n_small": n_small, "n_large": n_large})
            if shard_sq is not None:
                out[-1]["mse_shards"] = (shard_sq / self.shard_size).tolist()
        for row in out:
            row["fvu"] = row["mse"] / self.var
        return out


# ---- meta-SAEs ----

def path_summary(path: list[dict]) -> dict:
    """How monotone a swap path is (`Stitcher.swap_path`: steps with `mse`, `l0`): the Spearman correlation of
    MSE with the step; the largest excursion of the MSE beyond the range of its two endpoints, as a fraction of
    that range (0: the path stays between S's and L's MSE); MSE at the start, middle and end; L0 at both ends.
    With the steps' `mse_shards` (a Stitcher with noise shards), the noise floor of the middle and the ends,
    paired over the shards (`metrics.paired_beyond_noise`): `mid_minus_higher_end`, and whether the midpoint lies
    above both endpoints (`mid_above_ends_beyond_noise`) and the endpoints differ (`ends_differ_beyond_noise`)
    beyond it. (The midpoint is fixed in advance, not the path's peak, so the test is not of a chosen extreme.)"""
    from scipy.stats import spearmanr

    if len(path) < 2:
        raise ValueError(f"a swap path needs at least two steps (got {len(path)})")
    mse = np.array([q["mse"] for q in path], dtype=float)
    lo, hi = min(mse[0], mse[-1]), max(mse[0], mse[-1])
    out = {"spearman_mse_vs_step": float(spearmanr(np.arange(mse.size), mse).statistic),
           "max_excursion_beyond_endpoints": float(max(0.0, mse.max() - hi, lo - mse.min()) / max(hi - lo, 1e-12)),
           "mse_start_mid_end": [float(mse[0]), float(mse[mse.size // 2]), float(mse[-1])],
           "l0_start_end": [path[0]["l0"], path[-1]["l0"]]}
    if all("mse_shards" in q for q in (path[0], path[mse.size // 2], path[-1])):
        start, mid, end = path[0]["mse_shards"], path[mse.size // 2]["mse_shards"], path[-1]["mse_shards"]
        top = start if mse[0] >= mse[-1] else end
        out.update(mid_minus_higher_end=float(mse[mse.size // 2] - hi),
                   mid_above_ends_beyond_noise=bool(mse[mse.size // 2] > hi and paired_beyond_noise(mid, top)),
                   ends_differ_beyond_noise=paired_beyond_noise(start, end))
    return out


def meta_cfg(d_meta: int, k: int, n_rows: int, epochs: int, batch_size: int, lr: float, seed: int) -> TrainConfig:
    steps = max(1, (n_rows * epochs) // batch_size)
    return TrainConfig(d_sae=d_meta, k=k, batch_size=batch_size, lr=lr, n_tokens=steps * batch_size, seed=seed,
                       data_seed=seed, auxk_alpha=1 / 32, dead_tokens=max(batch_size, n_rows), architecture="batchtopk",
                       warmup_steps=min(20, steps))


def meta_sae(base: SAEBase, base_path: Path, cfg: TrainConfig, epochs: int, *, progress: bool = True) -> SAEBase:
    """A BatchTopK SAE trained on `base`'s unit decoder rows (`epochs` copies, in cfg's seeded order),
    cached under (base SAE artifact, cfg)."""
    rows = _dirs(base).numpy()

    def compute(work: Path) -> dict:
        data = np.tile(rows, (epochs, 1))
        sae, log = train_sae(data, cfg, progress=progress)
        save_saelens(sae, work / "sae")
        return {"final_log": log[-1] if log else {}}

    path = cached("meta_sae", {"base": Path(base_path).name, "cfg": cfg.key(), "epochs": epochs}, compute,
                  version=_META_VERSION)
    return load_sae(path / "sae")


@torch.no_grad()
def decoder_fvu(meta: SAEBase, base: SAEBase) -> dict[str, float]:
    """FVU (`metrics.fvu`, centred on the rows' mean) and mean L0 of `meta` on `base`'s unit decoder rows."""
    w = _dirs(base)
    z = meta.encode(w)
    return {"fvu": float(fvu(w, meta.decode(z))), "l0": float((z != 0).sum(1).float().mean())}


@torch.no_grad()
def meta_groups(meta: SAEBase, base: SAEBase, n_top: int = 6) -> list[dict]:
    """For every meta-latent: the base latents it is active on (`members`, by activation, highest first,
    at most `n_top`) and how many it is active on in all (`n_members`)."""
    z = meta.encode(_dirs(base))  # [F_base, F_meta]
    out = []
    for m in range(z.shape[1]):
        col = z[:, m]
        idx = torch.nonzero(col > 0).flatten()
        top = idx[torch.argsort(col[idx], descending=True)][:n_top]
        out.append({"meta_latent": m, "n_members": int(idx.numel()), "members": top.tolist(),
                    "activations": col[top].tolist()})
    return out


# ---- the notebooks' pipeline steps ----

def size_family(P, *, architecture: str = "topk", progress: bool = True) -> list:
    """`runs.TrainedSAE`-like records (`.sae`, `.path`) of every size in `P.sizes`: trained on Fig. 1's
    activations with seed `P.seeds[0]` (so Fig. 5's size sweep provides them from the cache; `architecture=
    "matryoshka"`: Matryoshka BatchTopK SAEs of those sizes, levels `matryoshka_widths_at`), or loaded
    from the SAELens release `P.release` when it is set. A release SAE carries the input transform of the
    activations it was trained on (`SAEBase.input_transform`, applied by `Stitcher`), and one whose config
    names a hookpoint other than `P.hookpoint` is refused: it would be fed other activations."""
    from types import SimpleNamespace

    from . import runs
    from .sae import load_release

    if P.release:
        fam = []
        for s in P.sizes:
            sae_id = P.release_id.format(size=s)
            sae = load_release(P.release, sae_id)
            if sae.hookpoint is not None and sae.hookpoint != P.hookpoint:
                raise ValueError(f"release {P.release} SAE {sae_id} was trained at {sae.hookpoint}, but "
                                 f"hookpoint={P.hookpoint!r}; set hookpoint: {sae.hookpoint}")
            fam.append(SimpleNamespace(sae=sae, path=Path(f"{P.release}/{sae_id}")))
        return fam
    acts, acts_dir = runs.data_for(P, "train", progress)
    base = runs.train_cfg(P, P.seeds[0])
    if architecture == "matryoshka":  # each size with the largest one's levels scaled to it (StitchArchParams)
        return runs.train_many(P, acts, acts_dir, [dataclasses.replace(
            base, d_sae=s, architecture="matryoshka", matryoshka_widths=matryoshka_widths_at(P, s)) for s in P.sizes],
            progress)
    return runs.train_many(P, acts, acts_dir, [dataclasses.replace(base, d_sae=s) for s in P.sizes], progress,
                           snapshots=runs.snapshot_lengths(P, acts))  # what each size's convergence check reads


def matryoshka_widths_at(P, size: int) -> tuple[int, ...]:
    """The inner widths of the size-`size` Matryoshka SAE: `P.matryoshka_widths` (the largest size's) × size / largest."""
    return tuple(w * size // P.sizes[-1] for w in P.matryoshka_widths)


def size_convergence(P, *, progress: bool = True) -> dict:
    """`saesanity.convergence.family` of the size family: each size's seed pair (`runs.convergence` at d_sae = each
    of P.sizes; seed 1 at Fig. 5's sizes is Fig. 5's). Not checked for SAEs loaded from a release."""
    from . import convergence, runs

    if P.release:
        return {"converged": None, "why": f"SAEs loaded from the release {P.release}, not trained here"}
    return convergence.family({f"d_sae={s}": runs.convergence(P, d_sae=s, progress=progress) for s in P.sizes})


def stitch_rows(P, *, progress: bool = True) -> np.ndarray:
    """The first `P.n_stitch_tokens` held-out activation rows."""
    from . import runs

    return np.asarray(runs.heldout_acts(P, progress=progress)[: P.n_stitch_tokens])


def meta_family(P, base, *, progress: bool = True, n_seeds: int = META_NOISE_SEEDS) -> list[dict]:
    """A meta-SAE of every width in `P.meta_sizes` on `base`'s decoder rows, each with its decoder FVU and
    L0 (`decoder_fvu`), and the same for a meta-SAE of each width on structureless rows (Gaussian
    directions of the same shape and seed) as the no-structure reference. The reported meta-SAE is seed
    `P.seeds[0]`'s; each width is trained again with the next `n_seeds` − 1 seeds (initialisation and row
    order; the rows fixed) for its noise floor: `fvu_seed_sd` and `fvu_seed_values` (`metrics.seed_spread`), on
    both the decoder rows and the Gaussian ones. Two FVUs of independently trained meta-SAEs are told apart
    with `metrics.beyond_noise` on these sds (one run each, so unpaired is the right test)."""
    from types import SimpleNamespace

    from .metrics import seed_spread

    if n_seeds < 2:
        raise ValueError(f"meta_family needs n_seeds >= 2 for its noise floor; got {n_seeds}")
    n = base.sae.W_dec.shape[0]
    g = torch.Generator().manual_seed(P.seeds[0])
    noise = SimpleNamespace(W_dec=torch.randn(base.sae.W_dec.shape, generator=g))
    noise_path = Path(f"gaussian-rows-{n}x{base.sae.W_dec.shape[1]}-seed{P.seeds[0]}")

    def fvus(rows, rows_path, m):
        def one(seed):
            sae = meta_sae(rows, rows_path, meta_cfg(m, P.meta_k, n, P.meta_epochs, P.meta_batch_size, P.meta_lr, seed),
                           P.meta_epochs, progress=progress)
            return {"sae": sae, **decoder_fvu(sae, rows)}
        return seed_spread(one, range(P.seeds[0], P.seeds[0] + n_seeds), ["fvu"])

    out = []
    for m in P.meta_sizes:
        ref = fvus(noise, noise_path, m)
        out.append({"meta_size": m, **fvus(base.sae, base.path, m), "gaussian_rows": {k: v for k, v in ref.items() if k != "sae"}})
    return out


def heldout_with_tokens(P, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(held-out activation rows [N, d], the token id at each row [N]) of P's activations."""
    from . import runs

    acts, acts_dir = runs.data_for(P, "heldout", progress)
    return acts, runs.row_tokens(acts_dir, runs.activation_spec(P, "heldout").drop_first, acts.shape[0])


# ---- beyond the paper: a Matryoshka size family beside the TopK one (leask_matryoshka) ----

def prefix_reconstruction(large: SAEBase, small: SAEBase, order: np.ndarray, theta: float) -> dict[str, float]:
    """Of `large`'s latents listed in `order`, the first m (= `small`'s size, the "prefix") and the rest: the fraction
    of each that is a reconstruction latent of `small` (max decoder cosine to it >= θ). For a Matryoshka SAE in its own
    order (np.arange), a prefix that *is* the smaller dictionary scores 1 and leaves the rest novel."""
    mc = max_decoder_cos(small, large)
    order, m = np.asarray(order), small.W_dec.shape[0]
    if order.shape != mc.shape or not 0 < m < mc.size:
        raise ValueError(f"order {order.shape} must list the larger SAE's {mc.size} latents, above the smaller's {m}")
    return {"prefix": float((mc[order[:m]] >= theta).mean()), "rest": float((mc[order[m:]] >= theta).mean())}


def matryoshka_suite(P, fams: dict[str, list], held: np.ndarray, *, progress: bool = True) -> dict:
    """Numbers of `leask_matryoshka` from each architecture's size family (`size_family`, "topk" and "matryoshka"):

    - `novel`: the novel fraction of each consecutive size pair, at θ and over `P.thetas`; `novel_mean` its mean
      over the pairs (Leask's headline number);
    - `prefix`: for each smaller size m, `prefix_reconstruction` of the largest SAE against the size-m one, its latents
      ordered by index (Matryoshka: its own nesting) and by held-out firing frequency, most frequent first (both
      architectures: the control, since nested inner latents are also frequent ones);
    - `meta`: `meta_family` of each architecture's largest SAE (decoder FVU and L0 by meta size; Gaussian rows).
    """
    from . import runs
    from .consistency import frequency_order

    sizes, out = P.sizes, {"novel": {}, "novel_mean": {}, "prefix": {}, "meta": {}}
    for arch, fam in fams.items():
        pairs = {f"{sizes[i]}→{sizes[i + 1]}": max_decoder_cos(fam[i].sae, fam[i + 1].sae) for i in range(len(sizes) - 1)}
        out["novel"][arch] = {n: {"at_theta": float((mc < P.theta).mean()), "curve": novel_fraction(mc, P.thetas).tolist()}
                              for n, mc in pairs.items()}
        out["novel_mean"][arch] = float(np.mean([v["at_theta"] for v in out["novel"][arch].values()]))
        large = fam[-1].sae
        by_freq = frequency_order(runs.latent_frequencies(large, held, device=P.device))
        orders = {"by_frequency": by_freq, **({"by_index": np.arange(large.W_dec.shape[0])} if arch == "matryoshka" else {})}
        out["prefix"][arch] = {str(s): {name: prefix_reconstruction(large, f.sae, o, P.theta) for name, o in orders.items()}
                               for s, f in zip(sizes[:-1], fam[:-1])}
        out["meta"][arch] = [{k: v for k, v in r.items() if k != "sae"}
                             for r in meta_family(P, fam[-1], progress=progress)]
    return out


def matryoshka_claims(numbers: dict) -> list[dict]:
    """Checks of `leask_matryoshka` (questions after Leask et al., not claims of theirs), each computed."""
    nm, pre, meta = numbers["novel_mean"], numbers["prefix"], numbers["meta"]
    mat, top = pre["matryoshka"], pre["topk"]
    fvu = {a: [r["fvu"] for r in rows] for a, rows in meta.items()}
    sd = {a: [r["fvu_seed_sd"] for r in rows] for a, rows in meta.items()}
    above = [bool(a > b and beyond_noise(a, b, sa, sb))
             for a, b, sa, sb in zip(fvu["matryoshka"], fvu["topk"], sd["matryoshka"], sd["topk"])]
    return [
        {"claim": "A Matryoshka size family has fewer novel latents between consecutive sizes than the TopK family "
                  "(mean novel fraction at θ)",
         "ours": {"matryoshka": nm["matryoshka"], "topk": nm["topk"]}, "verdict": bool(nm["matryoshka"] < nm["topk"])},
        {"claim": "A Matryoshka SAE's prefix [0, m) is the separately trained width-m Matryoshka SAE: more of its prefix "
                  "latents than of the rest are that SAE's reconstruction latents, at every smaller width",
         "ours": {m: {"prefix": v["by_index"]["prefix"], "rest": v["by_index"]["rest"]} for m, v in mat.items()},
         "verdict": all(v["by_index"]["prefix"] > v["by_index"]["rest"] for v in mat.values())},
        {"claim": "... beyond frequency: the Matryoshka prefix matches its smaller SAE better than TopK's m most "
                  "frequent latents match TopK's width-m SAE, at every smaller width",
         "ours": {m: {"matryoshka prefix": v["by_index"]["prefix"], "topk most frequent": top[m]["by_frequency"]["prefix"]}
                  for m, v in mat.items()},
         "verdict": all(v["by_index"]["prefix"] > top[m]["by_frequency"]["prefix"] for m, v in mat.items())},
        {"claim": "Meta-SAEs explain a Matryoshka decoder less well than a TopK decoder at every meta size, beyond the "
                  "noise floor (2 sd over meta-SAE seeds; its latents are closer to atomic)",
         "ours": {"matryoshka decoder FVU": fvu["matryoshka"], "topk decoder FVU": fvu["topk"],
                  "seed sd (matryoshka, topk)": [list(x) for x in zip(sd["matryoshka"], sd["topk"])],
                  "higher beyond noise": above},
         "verdict": all(above)},
    ]
