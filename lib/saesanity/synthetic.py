"""Ground truth for the consistency measures: TopK SAEs on SAELens' synthetic activations, whose true
features are known (issue 18).

Data: `sae_lens.synthetic.SyntheticModel` — `n_features` unit directions in R^hidden_dim (superposition is
their ratio), Zipfian firing probabilities, a forest of hierarchy trees (a child fires only with its parent;
a share of the parents' children mutually exclusive), a low-rank correlation between features, and a firing
magnitude of mean 1 with spread `std_magnitude`; x = Σ_i a_i f_i + bias. Generated locally from the model
seed (nothing is downloaded). Training rows and evaluation rows are two independent draws. The training rows
are generated once and held in memory (`activations: cached`, the default) or generated batch by batch as the
SAEs train on them (`streamed`, `SyntheticSource`: memory one batch, what the paper profile's 100M rows need).

SAEs: our TopK trainer, one family of every k of the L0 sweep × every seed, all on the same batches.

Per k (`evaluate`):
- **ground-truth recovery**: the absolute PW-MCC of an SAE's decoder against the true features
  (`consistency.pw_mcc`, = SAELens' `mean_correlation_coefficient`), mean over seeds; and the share of true
  features whose best decoder row has |cos| ≥ 0.9;
- **seed consistency**: the shared fraction (`matching`, the paper's rule) and the signed PW-MCC, averaged
  over seed pairs (the mean reappearance over seeds *is* the mean shared fraction, so it is not repeated);
- **per latent** (seed 0): the share of latents that are a true feature (|cos| ≥ 0.9 to one) among those
  that reappear in another seed (`consistency.reappearance` > 0) and among those that do not.
The questions: do the consistency numbers rise and fall with recovery across the sweep (Spearman over k),
and is a reappearing latent more often a true one?
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from . import consistency, matching
from .cache import cached
from .metrics import fvu, l0
from .sae import TrainConfig, load_sae, save_saelens
from .sae.train import MemmapSource, batch_order, train_family

RECOVERED_COS = 0.9  # a true feature counts as recovered when some decoder row has |cos| >= this


def model(P):
    """The `sae_lens.synthetic.SyntheticModel` P describes (deterministic in `P.model_seed`)."""
    from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig
    from sae_lens.synthetic.hierarchy import HierarchyConfig
    from sae_lens.synthetic.synthetic_model import (LowRankCorrelationConfig, SyntheticModel,
                                                    SyntheticModelConfig)

    cfg = SyntheticModelConfig(
        num_features=P.n_features, hidden_dim=P.hidden_dim,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=P.zipf_exponent, max_prob=P.max_prob,
                                                          min_prob=P.min_prob),
        hierarchy=HierarchyConfig(total_root_nodes=P.hierarchy_roots, branching_factor=P.hierarchy_branching,
                                  max_depth=1, mutually_exclusive_portion=P.mutually_exclusive_portion)
        if P.hierarchy_roots else None,
        correlation=LowRankCorrelationConfig(rank=P.correlation_rank, correlation_scale=P.correlation_scale,
                                             seed=P.model_seed) if P.correlation_rank else None,
        std_firing_magnitudes=P.std_magnitude, seed=P.model_seed)
    return SyntheticModel(cfg)


def _model_fields(P) -> dict:
    names = ("n_features", "hidden_dim", "zipf_exponent", "max_prob", "min_prob", "hierarchy_roots",
             "hierarchy_branching", "mutually_exclusive_portion", "correlation_rank", "correlation_scale",
             "std_magnitude", "model_seed")
    import sae_lens

    return {**{n: getattr(P, n) for n in names}, "sae_lens": sae_lens.__version__}


@torch.no_grad()
def sample(m, n: int, seed: int, chunk: int = 16384) -> np.ndarray:
    """[n, hidden_dim] float32 activations from `m`, drawn in chunks (the dense feature activations of a chunk
    are [chunk, n_features]) under torch seed `seed`."""
    g_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return np.concatenate([m.sample(min(chunk, n - i)).float().numpy() for i in range(0, n, chunk)])
    finally:
        torch.random.set_rng_state(g_state)


class SyntheticSource:
    """A training source (as `sae.train.MemmapSource`) that generates each batch from the synthetic model `m` when
    it is asked for: batch `step` is `sample(m, batch_size, seed + 1 + step)`, the same on every rank (each takes
    its contiguous slice) and on every call, so all SAEs of a family, a resumed run and any world size see the
    same rows. Every row is a fresh draw: one epoch of `n_steps x batch_size` rows, none held in memory."""

    def __init__(self, m, n_steps: int, batch_size: int, seed: int):
        self.m, self.n_steps, self.batch_size, self.seed = m, n_steps, batch_size, seed
        self.d_in = int(m.cfg.hidden_dim)

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        if not 0 <= step < self.n_steps:
            raise IndexError(f"batch {step} of a {self.n_steps}-step synthetic stream")
        x = torch.from_numpy(sample(self.m, self.batch_size, seed=self.seed + 1 + step))
        per = self.batch_size // world
        return x[rank * per:(rank + 1) * per]

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The batch initialisation is drawn from: the whole first batch, on every rank."""
        return self.batch(0)


def train_cfgs(P) -> list[TrainConfig]:
    return [TrainConfig(d_sae=P.d_sae, k=k, batch_size=P.batch_size, lr=P.lr, n_tokens=P.n_tokens, seed=s,
                        dead_tokens=min(P.n_tokens // 4, 500_000)) for k in P.ks for s in P.seeds]


def sweep(P, *, progress: bool = True) -> tuple[dict[int, list], np.ndarray, np.ndarray]:
    """({k: [SAE per seed]}, true features [n_features, hidden_dim], evaluation rows [n_eval_tokens, hidden_dim]):
    the data, the family and the evaluation rows cached as one artifact."""
    cfgs = train_cfgs(P)

    streamed = getattr(P, "activations", "cached") == "streamed"

    def compute(work: Path):
        m = model(P)
        held = sample(m, P.n_eval_tokens, seed=P.model_seed + 2)
        np.save(work / "features.npy", m.feature_dict.feature_vectors.detach().float().numpy())
        np.save(work / "heldout.npy", held)
        if streamed:  # seeds model_seed + 3 + step: disjoint from the held-out draw's
            source = SyntheticSource(m, P.n_tokens // P.batch_size, P.batch_size, seed=P.model_seed + 2)
        else:
            train = sample(m, P.n_tokens, seed=P.model_seed + 1)
            source = MemmapSource(train, batch_order(train.shape[0], cfgs[0]))
        results = train_family(source, cfgs, progress=progress, desc=f"{len(cfgs)} SAEs on synthetic data",
                               device=getattr(P, "device", "cpu"), checkpoint=work / "checkpoint.pt")
        for c, (sae, log) in zip(cfgs, results):
            save_saelens(sae, work / f"k{c.k}_seed{c.seed}")
            (work / f"k{c.k}_seed{c.seed}" / "log.json").write_text(json.dumps(log))
        return {"n_saes": len(cfgs)}

    fields = {"model": _model_fields(P), "saes": [c.key() for c in cfgs], **({"activations": "streamed"} if streamed else {})}
    path = cached("synthetic_sweep", fields, compute, resumable=True)  # a killed run resumes from its checkpoint
    saes = {k: [load_sae(path / f"k{k}_seed{s}") for s in P.seeds] for k in P.ks}
    return saes, np.load(path / "features.npy"), np.load(path / "heldout.npy")


def recovered_fraction(W_dec: torch.Tensor, features: np.ndarray, threshold: float = RECOVERED_COS) -> float:
    """Share of true features whose best-aligned decoder row has |cos| >= `threshold`."""
    C = np.abs(matching.cosine_matrix(torch.as_tensor(features, dtype=torch.float32), W_dec.detach().float()))
    return float((C.max(1) >= threshold).mean())


@torch.no_grad()
def evaluate(P, saes: dict[int, list], features: np.ndarray, held: np.ndarray) -> list[dict]:
    """One row per k of the sweep: ground-truth recovery, seed consistency and reconstruction (module docstring)."""
    x = torch.from_numpy(held)
    truth = torch.from_numpy(features)
    rows = []
    for k, group in saes.items():
        n = len(group)
        pairs = matching.pair_matchings(n, lambda i, j: matching.match_pair(group[i], group[j]))
        masks = matching.masks_from_pairs(pairs, n, matching.SharedRule(P.threshold))
        shared = [masks[i, j].mean() for i in range(n) for j in range(n) if i != j]
        best = np.abs(matching.cosine_matrix(group[0].W_dec.detach().float(), truth)).max(1)  # [d_sae] seed 0
        is_true = best >= RECOVERED_COS
        again = consistency.reappearance(masks)[0] > 0 if n >= 3 else masks[0, 1]
        rows.append({
            "k": k,
            "gt_mcc": float(np.mean([consistency.pw_mcc(s.W_dec, truth)["absolute"] for s in group])),
            "gt_recovered": float(np.mean([recovered_fraction(s.W_dec, features) for s in group])),
            "seed_shared": float(np.mean(shared)),
            "seed_pw_mcc": float(np.mean([consistency.pw_mcc_of(pairs[i, j]) for i in range(n) for j in range(i + 1, n)])),
            "true_given_reappears": float(is_true[again].mean()) if again.any() else None,
            "true_given_not": float(is_true[~again].mean()) if (~again).any() else None,
            "fvu": float(np.mean([fvu(x, s(x)).item() for s in group])),
            "l0": float(np.mean([l0(s.encode(x)).item() for s in group])),
        })
    return rows


def true_l0(P, n: int = 16384) -> float:
    """The synthetic model's mean number of active true features per row (over `n` draws)."""
    m = model(P)
    g_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(P.model_seed + 3)
        _, feats = m.sample_with_features(n)
    finally:
        torch.random.set_rng_state(g_state)
    return float((feats != 0).sum(1).float().mean())


def claims(numbers: dict) -> list[dict]:
    """Does each consistency number track ground-truth recovery across the L0 sweep (Spearman over k > 0)?"""
    from scipy.stats import spearmanr

    rows = numbers["rows"]
    gt = [r["gt_mcc"] for r in rows]
    out = []
    for key, name in (("seed_shared", "shared fraction"), ("seed_pw_mcc", "signed PW-MCC")):
        vals = [r[key] for r in rows]
        rho = None if None in vals or len(set(vals)) < 2 or len(set(gt)) < 2 else float(spearmanr(vals, gt).statistic)
        out.append({"claim": f"Across the L0 sweep, the seeds' {name} rises and falls with ground-truth recovery "
                             f"(Spearman with the true-feature MCC > 0)",
                    "ours": {"spearman_rho": rho}, "verdict": None if rho is None else bool(rho > 0)})
    both = [r for r in rows if r["true_given_reappears"] is not None and r["true_given_not"] is not None]
    out.append({"claim": "At every k, a latent that reappears in another seed is more often a true feature "
                         f"(|cos| >= {RECOVERED_COS}) than one that does not",
                "ours": {str(r["k"]): {"reappears": r["true_given_reappears"], "not": r["true_given_not"]}
                         for r in both},
                "verdict": bool(all(r["true_given_reappears"] > r["true_given_not"] for r in both)) if both else None})
    return out

