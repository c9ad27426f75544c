"""Random-transformer baselines (Heap et al. 2025): one SAE per (model variant × layer) and its metrics.

Each variant's activations at every layer come from one forward pass (an activation artifact per
(variant, hookpoint), collected once and cached); one SAE per (variant, layer) with seed `P.seed`,
cached like every SAE. Evaluation uses the held-out split of the same corpus for every variant, so
the `control` variant (Gaussian input embeddings) is evaluated on the same tokens as the others.

Metrics (definitions in `metrics`): held-out FVU centred on the evaluation set's mean, L0, L1,
cosine(x, x̂), dead fraction, SAELens-legacy and SAEBench explained variance (for comparison); CE-loss
and KL scores with the SAE spliced into the forward pass (`spliced_scores`); each latent's token
entropy over its top activations (`top_activation_tokens`, `metrics.token_entropy`).

Stronger baselines beside the random transformers (Korznikov et al. 2026, "Sanity checks for SAEs: do SAEs
beat random baselines?"; issue 18): SAEs of the same recipe on the trained model's activations with a part
kept at its random initialisation (`FROZEN`, `frozen_saes`; `TrainConfig.freeze`), and the token / bigram
lookup null (`lookup_null`, `metrics.lookup_fvu`) — how much of the variance a per-token (per-bigram) mean
explains, what random-transformer SAEs are suspected of learning. `saesanity report` and Heap's metrics
figure both report them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.std import tqdm

from . import metrics as M
from .activations import ActivationSpec, replaced
from .cache import cached, cached_json, digest
from .corpus import token_sequences
from .models import GaussianEmbedding, LoadedModel, load_model
from .runs import (RunView, TrainedSAE, data_for, activation_spec, fvu_convergence, recon_metrics, row_tokens,
                   train_cfg, train_hookpoints)
from .sae import SAEBase, TrainConfig

VARIANT_LABEL = {"trained": "trained", "rerandomized_incl_emb": "re-randomized incl. emb.",
                 "rerandomized_excl_emb": "re-randomized excl. emb.", "init": "init (from_config)",
                 "step0": "step 0", "control": "control (Gaussian input)"}
_SPLICE_VERSION = 1
FROZEN = ("decoder", "soft_decoder", "encoder")  # the frozen-weight baselines (`TrainConfig.freeze`)
FROZEN_LABEL = {"decoder": "frozen random decoder", "soft_decoder": "soft-frozen decoder (cos ≥ 0.8)",
                "encoder": "frozen random encoder"}
NOISE_SHARDS = M.NOISE_SHARDS  # held-out shards a reported FVU / L0 is remeasured on (`metrics.shard_spread`)
LOOKUP_MAX_ROWS = 500_000  # training rows the lookup null averages over (float64: peak ≈ 5 × rows × d_model × 8 B)


def view(P, variant: str, hookpoint: str | None = None, seed: int | None = None) -> RunView:
    """The per-(variant, hookpoint) parameters (`runs.RunView`) the `runs` pipeline steps read from a
    sweep's P; its SAEs have the seed `seed` (default P.seed)."""
    return RunView.of(P, variant=variant, hookpoint=hookpoint, seeds=[P.seed if seed is None else seed])


def hookpoints(P) -> list[str]:
    return [f"{P.kind}.{layer}" for layer in P.layers]


def variant_saes(P, variant: str, *, progress: bool = True) -> dict[str, TrainedSAE]:
    """hookpoint -> the SAE trained on `variant`'s activations there, every layer from one forward pass
    (`runs.train_hookpoints`: one collection when cached; streamed, every layer's SAE in one training pass;
    with sparsify, one sparsify run for every layer)."""
    V = view(P, variant)
    trained = train_hookpoints(V, {h: [train_cfg(V, P.seed)] for h in hookpoints(P)}, progress=progress,
                               snapshots=True)  # the shorter runs `variant_convergence` compares, where free
    return {h: ts[0] for h, ts in trained.items()}


def variant_convergence(P, variant: str, held: dict[str, tuple[np.ndarray, np.ndarray]], *,
                        progress: bool = True) -> dict[str, dict]:
    """hookpoint -> `runs.fvu_convergence` of `variant`'s SAE there (one seed: FVU alone) on its held-out
    activations `held` (`heldout`)."""
    V = view(P, variant)
    return {h: fvu_convergence(V, train_cfg(V, P.seed), held[h][0], hookpoint=h, progress=progress)
            for h in hookpoints(P)}


def heldout(P, variant: str, *, progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """hookpoint -> (held-out activations [N, d], the token id at each row [N]) for `variant`."""
    spec: ActivationSpec = activation_spec(view(P, variant), "heldout")
    out = {}
    for h, (acts, acts_dir) in data_for(view(P, variant), "heldout", progress, hookpoints(P)).items():
        out[h] = (acts, row_tokens(acts_dir, spec.drop_first, acts.shape[0]))
    return out


def each_variant(P, *, progress: bool = True):
    """(variant, its SAEs (`variant_saes`), its held-out activations (`heldout`)) for each of P.variants in turn —
    what every Heap et al. notebook loops over; one variant's held-out activations are in memory at a time."""
    for v in P.variants:
        yield v, variant_saes(P, v, progress=progress), heldout(P, v, progress=progress)


def frozen_cfgs(P, seed: int, parts: tuple[str, ...] | list[str] = FROZEN) -> list[TrainConfig]:
    """P's recipe (`runs.train_cfg`) at `seed` with each of `parts` frozen in turn (`TrainConfig.freeze`)."""
    bad = [f for f in parts if f not in FROZEN]
    if bad:
        raise ValueError(f"frozen baselines {bad}: valid {list(FROZEN)}")
    return [dataclasses.replace(train_cfg(P, seed), freeze=f) for f in parts]


def frozen_saes(P, parts: tuple[str, ...] | list[str] = FROZEN, *,
                progress: bool = True) -> dict[str, dict[str, TrainedSAE]]:
    """hookpoint -> {part: the seed-`P.seed` SAE of P's recipe on the trained model's activations there, with
    `part` frozen} (`TrainConfig.freeze`): the frozen-weight baselines of every hookpoint, each hookpoint's
    trained together in one pass (`runs.train_hookpoints`). Our trainer trains them even where sparsify trains
    P's TopK SAEs (`runs.sparsify_trains`)."""
    V = view(P, "trained")
    cfgs = {h: frozen_cfgs(V, P.seed, parts) for h in hookpoints(P)}
    return {h: dict(zip(parts, ts)) for h, ts in train_hookpoints(V, cfgs, progress=progress).items()}


def lookup_null(P, acts, acts_dir: Path | None, held: np.ndarray, held_dir: Path,
                max_rows: int = LOOKUP_MAX_ROWS, noise_shards: int = NOISE_SHARDS) -> dict | None:
    """The unigram and bigram lookup null (`metrics.lookup_fvu`) of one activation artifact: the FVU of
    predicting each held-out row of `held` by the mean of the training rows `acts` (at most `max_rows`, the
    first ones) with its token (bigram, backing off to the token, then the mean), each shrunk toward its
    back-off by the cross-validated λ (`metrics.lookup_lambdas`, recorded), with their noise floor over
    `noise_shards` held-out shards (`*_fvu_shard_sd`, as `recon_metrics`'). `acts_dir` / `held_dir`:
    the artifacts' folders (their tokens.npy); P: the run they were collected for (its `drop_first`). None
    when the training activations are streamed (no cached rows to average)."""
    if acts_dir is None:
        return None
    drop = activation_spec(P, "train").drop_first
    tok_train, tok_held = np.load(Path(acts_dir) / "tokens.npy"), np.load(Path(held_dir) / "tokens.npy")
    n = min(int(acts.shape[0]), max_rows)
    # kept by content (`cache.digest`: ≈ 0.4 s for 500K rows of 576) and by the code that computes it
    fields = {"rows": digest(acts[:n], held, tok_train, tok_held), "drop_first": drop, "noise_shards": noise_shards,
              "code": _lookup_code()}
    return cached_json("lookup", fields, lambda: _lookup_null(acts[:n], held, tok_train, tok_held, drop, noise_shards))


@functools.cache
def _lookup_code() -> str:
    return digest(Path(M.__file__).read_text(), inspect.getsource(_lookup_null))


def _lookup_null(acts, held, tok_train, tok_held, drop: int, noise_shards: int) -> dict:
    """`lookup_null`'s computation (uncached) on the training rows `acts` (all of them) and their tokens."""
    vocab = int(max(tok_train.max(), tok_held.max())) + 1  # one packing of bigrams for both splits
    n = int(acts.shape[0])
    X = torch.from_numpy(np.asarray(acts, dtype=np.float64))  # one float64 copy, shared by every step below
    Y = np.asarray(held, dtype=np.float32)
    keys = {o: (M.ngram_keys(tok_train, o, drop, vocab)[:n], M.ngram_keys(tok_held, o, drop, vocab)[:Y.shape[0]])
            for o in (1, 2)}
    lam = M.lookup_lambdas(X, [keys[1][0], keys[2][0]])  # greedy: the unigram's λ is the same alone
    Yt = torch.from_numpy(Y).double()
    out = {"lambdas": {"unigram": lam[0], "bigram": lam[1]},  # inf (null in JSON): that keying is not used
           "n_train_rows": n}
    for name, order in (("unigram", 1), ("bigram", 2)):
        pred = M.lookup_predict(X, [keys[o][0] for o in range(1, order + 1)],
                                [keys[o][1] for o in range(1, order + 1)], lam[:order], Y.shape[0])
        out[f"{name}_fvu"] = float(M.fvu(Yt, pred))  # = metrics.lookup_fvu
        if noise_shards and Y.shape[0] >= 2 * noise_shards:  # its noise floor, as recon_metrics' for an SAE
            spread = M.shard_spread(lambda i: M.fvu(Yt[torch.from_numpy(i)], pred[torch.from_numpy(i)]),
                                    np.arange(Y.shape[0]), noise_shards)  # the same shards as recon_metrics'
            out[f"{name}_fvu_shard_sd"], out[f"{name}_fvu_shard_values"] = spread["sd"], spread["values"]
    return out


def variant_lookup_null(P, variant: str, *, progress: bool = True) -> dict[str, dict | None]:
    """hookpoint -> `lookup_null` of `variant`'s activations there (its training rows, its held-out rows)."""
    V = view(P, variant)
    train = data_for(V, "train", progress, hookpoints(P))
    held = data_for(V, "heldout", progress, hookpoints(P))
    return {h: lookup_null(V, *train[h], *held[h]) for h in hookpoints(P)}


def metric_rows(P, variant: str, saes: dict[str, TrainedSAE], held: dict[str, tuple[np.ndarray, np.ndarray]], *,
                progress: bool = True) -> dict[str, dict]:
    """hookpoint -> `recon_metrics` of `saes[h]` on `held[h]` (`heldout`) and its spliced CE / KL scores on
    `variant` (`variant_scores`): the rows of Heap's metrics figure, for a variant's SAEs or a frozen baseline's."""
    scores = variant_scores(P, variant, saes, progress=progress)
    return {h: {**recon_metrics(t.sae, held[h][0], device=P.device), **scores[h]} for h, t in saes.items()}


@torch.no_grad()
def top_activation_tokens(sae: SAEBase, acts: np.ndarray, tokens: np.ndarray, n_top: int,
                          batch: int = 8192) -> np.ndarray:
    """[F, n_top] token ids at each latent's n_top highest activations over `acts` (rows aligned with
    `tokens`), highest first; −1 where a latent fired on fewer than n_top rows."""
    F_ = sae.W_dec.shape[0]
    best_v = torch.full((F_, n_top), -torch.inf)
    best_i = torch.full((F_, n_top), -1, dtype=torch.long)
    for s in range(0, acts.shape[0], batch):
        z = sae.encode(torch.from_numpy(np.array(acts[s:s + batch], dtype=np.float32))).t()  # [F, b]
        z = z.masked_fill(z <= 0, -torch.inf)
        rows = torch.arange(s, s + z.shape[1]).expand(F_, -1)
        v, idx = torch.cat([best_v, z], 1).topk(n_top, dim=1)
        best_i = torch.cat([best_i, rows], 1).gather(1, idx)
        best_v = v
    tok = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
    return torch.where(torch.isfinite(best_v), tok[best_i.clamp_min(0)], -1).numpy()


def _next_token_ce(logits_BTV: torch.Tensor, ids_BT: torch.Tensor, start: int) -> torch.Tensor:
    """[B·(T−1−start)] cross-entropy of predicting ids[:, t+1] from position t, for t ≥ start."""
    lg = logits_BTV[:, start:-1].float()
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), ids_BT[:, start + 1:].reshape(-1), reduction="none")


@torch.no_grad()
def spliced_scores(lm: LoadedModel, saes: dict[str, SAEBase], seqs: np.ndarray, *, drop_first: int = 1,
                   batch_size: int = 8, progress: bool = True) -> dict[str, dict[str, float]]:
    """hookpoint -> CE and KL with the SAE spliced in (`metrics.ce_loss_score`, `metrics.kl_score`).

    For each batch of `seqs` the model runs once clean and, per hookpoint, once with the activation
    there replaced by the SAE's reconstruction and once by zeros. Positions before `drop_first` are
    left clean (the SAEs never saw them) and losses count only predictions made from positions ≥
    drop_first. The control variant's Gaussian inputs are redrawn identically for the three runs.
    """
    emb = lm.model.get_input_embeddings()
    acc = {h: dict.fromkeys(("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero"), 0.0) for h in saes}
    n = 0

    def run(ids, b):
        if isinstance(emb, GaussianEmbedding):
            emb.call_index = b
        return lm.model(input_ids=ids, use_cache=False).logits

    def splice(fn):
        def apply(a):
            out = a.clone()
            out[:, drop_first:] = fn(a[:, drop_first:]).to(a.dtype)
            return out
        return apply

    for b in tqdm(range(0, len(seqs), batch_size), disable=not progress, desc="spliced CE/KL", unit="batch"):
        ids = torch.from_numpy(np.asarray(seqs[b:b + batch_size], dtype=np.int64)).to(lm.model.device)
        clean = run(ids, b)
        ce_clean = _next_token_ce(clean, ids, drop_first)
        lc = clean[:, drop_first:-1].reshape(-1, clean.shape[-1])
        for h, sae in saes.items():
            def recon(a, sae=sae):
                flat = a.reshape(-1, a.shape[-1]).float()
                return sae(flat.to(sae.W_dec.device)).reshape(a.shape)
            with replaced(lm, h, splice(recon)):
                with_sae = run(ids, b)
            with replaced(lm, h, splice(torch.zeros_like)):
                zeroed = run(ids, b)
            for key, logits in (("sae", with_sae), ("zero", zeroed)):
                acc[h][f"ce_{key}"] += float(_next_token_ce(logits, ids, drop_first).sum())
                acc[h][f"kl_{key}"] += float(M.kl_next_token(lc, logits[:, drop_first:-1].reshape(lc.shape)).sum())
            acc[h]["ce_clean"] += float(ce_clean.sum())
        n += ce_clean.numel()
    out = {}
    for h, a in acc.items():
        r = {k: v / n for k, v in a.items()}
        r["ce_loss_score"] = M.ce_loss_score(r["ce_clean"], r["ce_sae"], r["ce_zero"])
        r["kl_score"] = M.kl_score(r["kl_sae"], r["kl_zero"])
        r["n_predictions"] = n
        out[h] = r
    return out


def variant_scores(P, variant: str, saes: dict[str, TrainedSAE], *, progress: bool = True) -> dict[str, dict]:
    """`spliced_scores` of `variant`'s SAEs on the first `P.n_splice_tokens` held-out tokens, cached
    by (SAE artifacts, model, variant, dtype, tokens)."""
    n_seqs = max(1, -(-P.n_splice_tokens // (P.seq_len - 1)))
    fields = {"saes": {h: t.path.name for h, t in saes.items()}, "model": P.model, "variant": variant,
              "model_dtype": P.model_dtype, "corpus": P.corpus, "seq_len": P.seq_len, "data_seed": P.data_seed,
              "n_seqs": n_seqs}

    def compute(work: Path) -> dict:
        lm = load_model(P.model, variant, 0, P.device, P.model_dtype)
        seqs = token_sequences(P.corpus, lm.tokenizer, lm.tokenizer_id, P.seq_len, split="heldout",
                               seed=P.data_seed, max_tokens=n_seqs * P.seq_len)[:n_seqs]
        res = spliced_scores(lm, {h: t.sae.to(P.device) for h, t in saes.items()}, seqs,
                             batch_size=P.model_batch_size, progress=progress)
        (work / "scores.json").write_text(json.dumps(res))
        return {}

    path = cached("splice", fields, compute, version=_SPLICE_VERSION)
    return json.loads((path / "scores.json").read_text())


VARIANT_COLOR = {"trained": "#000000", "rerandomized_incl_emb": "#d62728", "rerandomized_excl_emb": "#ff7f0e",
                 "init": "#1f77b4", "step0": "#1f77b4", "control": "#2ca02c"}


def layer_of(hookpoint: str) -> int:
    return int(hookpoint.split(".")[1])


def spearman_with_layer(values: dict[str, float]) -> float | None:
    """Spearman correlation of a per-hookpoint value with the layer index (None if undefined)."""
    from scipy.stats import spearmanr

    hs = sorted(values, key=layer_of)
    if len(hs) < 3:
        return None
    rho = spearmanr([layer_of(h) for h in hs], [values[h] for h in hs]).statistic
    return None if np.isnan(rho) else float(rho)


def massive_activation_stats(acts: np.ndarray, factor: float = 10.0) -> dict[str, float]:
    """Diagnostics of "massive activations" (a few tokens with residual norms orders of magnitude above
    the rest, Sun et al. 2024), which dominate any variance-based metric: the fraction of rows whose
    norm exceeds `factor` × the median norm, the max / median norm ratio, and the share of the total
    (centred) variance carried by the single largest-variance dimension."""
    x = np.asarray(acts, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    var = x.var(0)
    med = float(np.median(norms))
    return {"frac_rows_above": float((norms > factor * med).mean()), "factor": factor,
            "max_over_median_norm": float(norms.max() / med) if med > 0 else float("nan"),
            "top_dim_variance_share": float(var.max() / var.sum()) if var.sum() > 0 else float("nan")}
