"""Notebook parameters: `params/<stem>.yaml` profiles -> a typed, validated dataclass.

Each notebook's class is composed of field groups (`Text`, `ModelData`, `SAETraining`, `RunFields`,
`InterpFields`, ...), so a field and its checks are written once. A field carries its one documentation line
(`param`), shown in the notebook's parameters cell (generated from this module: `python -m saesanity.params
cell <stem>`), by `papermill --help-notebook` and by `python -m saesanity.params --help <stem>`; enumerations are
`Literal` types, so a typo gets the valid values back. A field that one value serves everywhere has a class default.

Each YAML file maps profile names (`smoke`, `default`, `paper-mini`, `paper`) to the values that differ: from
the class defaults (`default`), or from `default` (the other profiles). A file that reads another notebook's
artifacts starts `same_as: <that stem>` and holds only what differs from that file, section by section
(`read_profiles`). Unknown keys, unknown profiles, values of the wrong type and conflicting options are rejected
with a message naming the bad value.

Profiles overlay `default` (`profile_values`), except `paper-mini`, which overlays `paper` (itself
overlaid on `default`): paper-mini = default ∪ paper ∪ paper-mini. A `paper-mini` section names only
what makes the paper's settings run on a 2-core CPU with no internet — the model and corpus (local
stand-ins: `standin:<hub name>` in `models`, `standin:<name>` in `corpus`), the device and dtype,
and sizes (token counts, widths, batch sizes, sequence length, sweep lists, auto-interp counts …;
`PAPER_MINI_KEYS`, which tests/test_params.py enforces). Everything else — streamed training, the
variants, hookpoints, recipes — is the paper profile's by construction, so `make test` runs the
paper's code paths on tiny stand-ins. Its figures say so ("paper-mini … not a result").

Command line (used by the Makefile to feed papermill a flat parameter file):

    python -m saesanity.params <stem> <profile>  > flat.yaml
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from . import machine
from .paths import PARAMS_DIR

# the profile each profile is overlaid on (after `default`): paper-mini is the paper profile, shrunk
BASE_PROFILE = {"paper-mini": "paper"}
# the keys a `paper-mini` section may set: where the model, text and hardware come from, and sizes —
# key -> why it may differ from `paper` ("size": a count no larger than the paper's; "scaled list": a sweep of
# sizes, no longer and no larger than the paper's; "subset": some of the paper's values). Everything else
# (activations: streamed, variants, hookpoints, kinds, architectures, k, lr, seeds, thresholds, explainer,
# scorers, ...) paper-mini inherits from `paper` unchanged (tests/test_params.py checks every file).
PAPER_MINI_KEYS = {
    # the local stand-ins and the 2-core CPU
    "model": "a local stand-in of the paper's model (standin:<hub name>) or SmolLM2's tiny random Llama",
    "corpus": "a local stand-in of the paper's corpus (standin:<name>)",
    "device": "cpu", "model_dtype": "float32 on CPU", "llm_dtype": "float32 on CPU",
    # the auto-interp chat model: the tiny random model in process instead of a served Llama-70B
    "llm_backend": "hf-local (the OpenAI-compatible client is unit-tested against a local fake server)",
    "llm_model": "the tiny random model", "api_base": "none for hf-local",
    # a SAELens release (the hub) replaced by the notebook's own size family
    "release": "'' (trains its own family; load_release is unit-tested with a stand-in)", "release_id": "''",
    # sizes
    **dict.fromkeys(["n_tokens", "d_sae", "batch_size", "seq_len", "model_batch_size", "n_eval_tokens",
                     "n_splice_tokens", "stream_buffer_tokens", "entropy_top_n", "calib_tokens", "calib_runs",
                     "n_stitch_tokens", "meta_epochs", "n_boot", "max_draws", "n_latents", "n_explain", "n_score_act",
                     "n_score_non", "n_steps", "n_noise", "n_features", "hidden_dim", "hierarchy_roots",
                     "correlation_rank", "null_tokens"], "size"),
    **dict.fromkeys(["sizes", "ks", "train_tokens", "layer_sizes", "meta_sizes", "matryoshka_widths"], "scaled list"),
    **dict.fromkeys(["layers", "interp_layers", "ps", "depths", "superpositions", "h2_depths", "rules"], "subset"),
    "noise_rate": "follows n_eval_tokens (a noise latent needs enough firings)",
    "sparsify_overrides": "size: the recipe's batch (sequences), accumulation and warm-up steps shrunk to the "
                          "stand-in's token budget (paper profiles override nothing)",
}


class ParamsError(ValueError):
    """A parameter file or value is wrong; the message says which and what would be valid."""


# ---------------------------------------------------------------- the enumerations a parameter may take
# (tests/test_params.py checks each against the registry of the module that implements it)
Profile = Literal["smoke", "default", "paper-mini", "paper"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]  # models.DTYPES, and "auto" (machine.resolve_dtype)
ActsDtype = Literal["float32", "float16"]  # activations.STORE_DTYPES
Variant = Literal["trained", "rerandomized_incl_emb", "rerandomized_excl_emb", "init", "step0", "control"]  # models.VARIANTS
HookKind = Literal["resid_pre", "resid_post", "mlp_out", "attn_out"]  # activations.HOOK_KINDS
Activations = Literal["cached", "streamed"]
Trainer = Literal["ours", "sparsify"]
Autocast = Literal["auto", "none", "bf16"]  # "auto": machine.resolve_autocast
LRSchedule = Literal["constant", "linear"]  # sae.train.LR_SCHEDULES
Architecture = Literal["topk", "batchtopk", "relu", "gated", "jumprelu", "matryoshka"]  # sae.arch.ARCHITECTURES
Explainer = Literal["llm", "top-tokens"]  # autointerp.explainers.EXPLAINERS
Backend = Literal["hf-local", "openai-compatible"]  # autointerp.pipeline.BACKENDS
Scorer = Literal["detection", "fuzzing", "embedding"]  # autointerp.scorers.SCORERS
FrozenPart = Literal["decoder", "soft_decoder", "encoder"]  # baselines.FROZEN

PROFILES: tuple[str, ...] = typing.get_args(Profile)
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activations)
TRAINERS: tuple[str, ...] = typing.get_args(Trainer)
AUTOCASTS: tuple[str, ...] = typing.get_args(Autocast)


def param(doc: str, default: Any = dataclasses.MISSING) -> Any:
    """A parameter field: its one documentation line (shown in the notebook's parameters cell, so by
    `papermill --help-notebook`, and by `python -m saesanity.params --help <stem>`) and its default, where one
    value serves every notebook that has the field (none: every notebook's YAML `default` gives it)."""
    if "=" in doc:  # papermill reads a parameters-cell line with a second '=' as no parameter at all
        raise ValueError(f"parameter documentation may not contain '=': {doc!r}")
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


# ---------------------------------------------------------------- field groups, composed into each notebook's class
# Each group declares its fields once and checks them in `check`, which calls `super().check()` first, so a
# composed class runs every group's rules once (in method-resolution order).

# The fields whose "auto" is resolved for this machine when the parameters are built (`_Group.__post_init__`):
# bf16 where the device has fast bf16 matmuls (machine.bf16_fast), fp32 elsewhere. The parameters a notebook,
# its cache keys and its figure's JSON see are the resolved ones.
AUTO_FIELDS = {"model_dtype": machine.resolve_dtype, "llm_dtype": machine.resolve_dtype,
               "sae_autocast": machine.resolve_autocast}


@dataclass(frozen=True, kw_only=True)
class _Group:
    def __post_init__(self) -> None:
        device = getattr(self, "device", "cpu")
        for name, resolve in AUTO_FIELDS.items():
            if getattr(self, name, None) == "auto":
                object.__setattr__(self, name, resolve("auto", device))

    def check(self) -> None:
        """Cross-field rules (types and enumerations are checked by `build` from the annotations)."""


@dataclass(frozen=True, kw_only=True)
class Profiled(_Group):
    profile: Profile = param("which profile these values came from: smoke | default | paper-mini | paper")


@dataclass(frozen=True, kw_only=True)
class Text(_Group):
    """The model whose tokenizer reads the text, the text, and its held-out split."""

    model: str = param("model spec: smollm2-135m, smollm2-tiny-random, standin:<hub name>, org/name[@revision], "
                       "a bare hub name (gpt2) or a local folder (saesanity.models)")
    corpus: str = param("corpus spec: debian, debian:austen,web, hf:<dataset>[:<config>][@revision], "
                        "standin:<name> (saesanity.corpus)")
    seq_len: int = param("tokens per sequence fed to the model", 256)
    data_seed: int = param("seed of the corpus shuffle and of the SAE batch order (shared by all SAE seeds)", 0)
    n_eval_tokens: int = param("held-out tokens the results are measured on")

    def check(self) -> None:
        super().check()
        if self.seq_len < 2 or self.n_eval_tokens < 1:
            raise ParamsError(f"seq_len={self.seq_len} must be >= 2 and n_eval_tokens={self.n_eval_tokens} >= 1")
        from .corpus import parse_corpus
        from .models import check_spec

        for what, check in ((self.model, check_spec), (self.corpus, parse_corpus)):
            try:  # the spec's syntax now, not minutes into the run
                check(what)
            except ValueError as err:
                raise ParamsError(str(err)) from None


@dataclass(frozen=True, kw_only=True)
class ModelData(Text):
    """Activations of the model's forward pass over the text."""

    n_tokens: int = param("training tokens of activations collected (and seen by each SAE, one epoch)")
    model_batch_size: int = param("sequences per model forward pass", 8)
    model_dtype: Dtype = param("dtype of the model's forward pass: auto (bfloat16 where the CPU has bf16 matrix "
                               "instructions, else float32) | float32 | bfloat16 | float16 (activations are stored "
                               "in acts_dtype)", "auto")
    acts_dtype: ActsDtype = param("dtype cached activations are stored in: float16 (half float32's disk and "
                                  "memory traffic; exact for a bfloat16 forward within float16's range, else 11 "
                                  "significant bits: bench/RESULTS.md) | float32", "float16")
    device: str = param("cpu | cuda (or cuda:<n>)", "cpu")

    def check(self) -> None:
        super().check()
        if self.n_tokens < 1 or self.model_batch_size < 1:
            raise ParamsError(f"n_tokens={self.n_tokens} and model_batch_size={self.model_batch_size} must be >= 1")
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise ParamsError(f"device={self.device!r}; valid: 'cpu', 'cuda', 'cuda:<n>', 'mps'")


@dataclass(frozen=True, kw_only=True)
class SAETraining(_Group):
    """How the TopK SAEs are trained (used with `ModelData`, whose n_tokens they train on)."""

    d_sae: int = param("number of latents")
    k: int = param("active latents per token (TopK)")
    batch_size: int = param("tokens per SAE optimisation step")
    lr: float = param("Adam learning rate")
    auxk_alpha: float = param("weight of the AuxK loss on dead latents (0 disables it)", 0.03125)
    activations: Activations = param("cached: training activations collected once to a memmap | streamed: SAEs fed "
                                     "by the model forward (no activation cache; the paper profiles)", "cached")
    stream_buffer_tokens: int = param("rows of the streamed shuffle buffer (memory: this x d_model floats), rounded "
                                      "down to whole batches", 262144)
    trainer: Trainer = param("ours: saesanity.sae.train | sparsify: EleutherAI's sparsify trains the TopK SAEs (the "
                             "papers' engine; other architectures stay ours)", "ours")
    sparsify_recipe: str = param("when trainer is sparsify: paulo_belrose_2025 | heap_2025 | sparsify_1.3.3 "
                                 "(saesanity.sae.sparsify_trainer.RECIPES)", "paulo_belrose_2025")
    sparsify_overrides: dict = param("recipe fields changed, e.g. {batch_size: 8} (in sequences); d_sae, k and "
                                     "seq_len come from the profile", {})
    epochs: int = param("passes each SAE makes over the n_tokens collected activations (it trains on n_tokens x "
                        "epochs; a repeated row is the same activation vector, a repeated sample); cached only", 1)
    sae_autocast: Autocast = param("none: fp32 SAE forward | bf16: our trainer's SAE forward under bf16 autocast, fp32 "
                                   "parameters and Adam (sparsify keeps its own precision) | auto: bf16 where the CPU "
                                   "has bf16 matrix instructions, else none", "none")
    lr_schedule: LRSchedule = param("constant: lr after the warm-up | linear: decaying to 0 at each run's end, as "
                                    "sparsify's (our trainer; then every training length is its own run)", "constant")

    def sae_hookpoints(self) -> list[str]:
        """The hookpoints SAEs are trained at (the trainer must support each)."""
        raise NotImplementedError

    def check(self) -> None:
        super().check()
        from .activations import parse_hookpoint

        for h in self.sae_hookpoints():
            try:
                parse_hookpoint(h)
            except ValueError as err:
                raise ParamsError(str(err)) from None
        if not 0 < self.k < self.d_sae:
            raise ParamsError(f"k={self.k}: must satisfy 0 < k < d_sae={self.d_sae}")
        if not self.lr > 0 or not self.auxk_alpha >= 0 or self.batch_size < 1:
            raise ParamsError(f"lr={self.lr} must be > 0, auxk_alpha={self.auxk_alpha} >= 0 and batch_size="
                              f"{self.batch_size} >= 1")
        if self.n_tokens < self.batch_size:
            raise ParamsError(f"n_tokens={self.n_tokens} is smaller than one SAE batch ({self.batch_size})")
        # each value on its own before the checks across fields
        from .sae.sparsify_trainer import RECIPE_FIELDS, RECIPES

        if self.sparsify_recipe not in RECIPES:
            raise ParamsError(f"sparsify_recipe={self.sparsify_recipe!r}; valid: {list(RECIPES)}")
        if self.epochs < 1:
            raise ParamsError(f"epochs={self.epochs}: must be >= 1")
        if self.epochs > 1 and (self.activations != "cached" or self.trainer != "ours"):
            raise ParamsError(f"epochs={self.epochs} passes over cached activations: needs activations=cached and "
                              f"trainer=ours (got {self.activations}, {self.trainer})")
        if self.stream_buffer_tokens < self.batch_size:
            raise ParamsError(f"stream_buffer_tokens={self.stream_buffer_tokens} must hold at least one SAE batch "
                              f"({self.batch_size})")
        own = {"num_latents": "d_sae", "expansion_factor": "d_sae", "k": "k", "ctx_len": "seq_len"}
        for name in self.sparsify_overrides:
            if name in own:
                raise ParamsError(f"sparsify_overrides sets {name!r}: the profile's {own[name]} sets it")
            if name not in RECIPE_FIELDS:
                raise ParamsError(f"sparsify_overrides: unknown recipe field {name!r}; valid: "
                                  f"{[f for f in RECIPE_FIELDS if f not in own]}")
        if self.trainer == "sparsify":
            bad = [h for h in self.sae_hookpoints() if h.startswith("resid_pre")]
            if bad:
                raise ParamsError(f"trainer=sparsify trains on module outputs; hookpoints {bad} are resid_pre "
                                  f"(use resid_post of the layer before)")


@dataclass(frozen=True, kw_only=True)
class RunFields(SAETraining, ModelData):
    """What the cached pipeline steps (`saesanity.runs`) read: one model variant, one hookpoint, SAE seeds.
    A notebook's `SeedRunParams` is one; so is `runs.RunView`, a sweep's or a report's view of one point."""

    variant: Variant = param("trained | rerandomized_incl_emb | rerandomized_excl_emb | init | step0 | control "
                             "(saesanity.models.VARIANTS)", "trained")
    hookpoint: str = param("e.g. mlp_out.6 (MLP output of layer 6); resid_pre.L, resid_post.L, attn_out.L")
    seeds: list[int] = param("SAE initialisation seeds (all see the same batches); pair figures compare the first two")

    def sae_hookpoints(self) -> list[str]:
        return [self.hookpoint]


# ---------------------------------------------------------------- one class per kind of notebook

@dataclass(frozen=True, kw_only=True)
class SeedRunParams(RunFields, Profiled):
    """TopK SAEs of several seeds on one activation set (Paulo & Belrose Fig. 1, 2, A2, A3)."""

    threshold: float = param("cosine threshold of the shared-latent rule", 0.7)

    def check(self) -> None:
        super().check()
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"seeds={self.seeds}: need at least two distinct seeds")
        if not 0.0 < self.threshold < 1.0:
            raise ParamsError(f"threshold={self.threshold}: must lie in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class ArchSeedParams(SeedRunParams):
    """Seed stability by architecture: P's TopK seed pair beside a seed pair of each other k-sparse architecture at
    the same size, k and tokens, and the Matryoshka levels (`consistency.architecture_suite`)."""

    architectures: list[Architecture] = param("seed pairs at d_sae, k and n_tokens: topk (P's own pair) | batchtopk | "
                                              "matryoshka (the k-sparse ones, which need no sparsity calibration)")
    matryoshka_widths: list[int] = param("inner widths m_1 < ... < d_sae of the matryoshka SAEs (the full width is "
                                         "the last level; each prefix [0, m_g) is trained to reconstruct alone)")
    n_chance_pairs: int = param("pairs of random dictionaries of the SAEs' shape for the PW-MCC chance level", 3)

    def check(self) -> None:
        super().check()
        bad = [a for a in self.architectures if a not in ("topk", "batchtopk", "matryoshka")]
        if "topk" not in self.architectures or bad or len(set(self.architectures)) != len(self.architectures):
            raise ParamsError(f"architectures={self.architectures}: distinct, from topk | batchtopk | matryoshka, "
                              "with topk (the reference)")
        w = list(self.matryoshka_widths)
        if "matryoshka" in self.architectures and (not w or w != sorted(set(w)) or w[0] < 1 or w[-1] >= self.d_sae):
            raise ParamsError(f"matryoshka_widths={w}: strictly increasing inner widths in 1..{self.d_sae - 1} "
                              f"(d_sae={self.d_sae} is always the last level)")
        if self.n_chance_pairs < 1:
            raise ParamsError(f"n_chance_pairs={self.n_chance_pairs}: must be >= 1")


@dataclass(frozen=True, kw_only=True)
class PowerLawParams(SeedRunParams):
    """Fig. A1: only-in-base fraction vs number of SAEs, with fits and a bootstrap over base seeds."""

    n_boot: int = param("bootstrap resamples of the base seeds for the fit's offset c")
    max_draws: int = param("(subset, base) pairs per N; all of them are used when there are fewer")

    def check(self) -> None:
        super().check()
        if len(self.seeds) < 5:
            raise ParamsError(f"seeds={self.seeds}: a 3-parameter fit over N = 2…n needs n >= 5 seeds")


@dataclass(frozen=True, kw_only=True)
class ConsistencyParams(SeedRunParams):
    """Seed consistency beyond the shared fraction (saesanity.consistency): PW-MCC, reappearance, unstable
    subspaces, chance levels and the step-0 control, on several seeds."""

    n_chance_pairs: int = param("pairs of random dictionaries of the SAEs' shape for each statistic's chance level")
    absolute_pairs: int = param("seed pairs (base, j) for j from 1, given the absolute PW-MCC (a dense |cos| Hungarian "
                                "each; the signed form is computed for every pair)")
    subspace_dim_frac: float = param("dimension of the unstable latents' principal subspaces, as a fraction of "
                                     "d_model (their span is all of R^d_model otherwise)")
    data_nulls: list[str] = param("data nulls (saesanity.nulls) a seed pair is trained on beside the real activations: "
                                  "gaussian (same mean and covariance), shuffled (same per-dimension marginals); [] none",
                                  ["gaussian", "shuffled"])
    null_tokens: int = param("training tokens of the data-null pairs and of the real pair they are compared with (at "
                             "n/4 or n/2 of the training tokens the real pair is a free snapshot of the seed run)")

    def check(self) -> None:
        super().check()
        from .nulls import KINDS

        bad = [k for k in self.data_nulls if k not in KINDS]
        if bad or len(set(self.data_nulls)) != len(self.data_nulls):
            raise ParamsError(f"data_nulls={self.data_nulls}: distinct kinds among {list(KINDS)}")
        n = self.n_tokens * self.epochs
        if self.data_nulls and not self.batch_size <= self.null_tokens <= n:
            raise ParamsError(f"null_tokens={self.null_tokens}: must lie in batch_size={self.batch_size}.."
                              f"{n} (the training tokens)")
        if len(self.seeds) < 3:
            raise ParamsError(f"seeds={self.seeds}: per-latent reappearance needs at least 3 seeds")
        if self.n_chance_pairs < 1 or not 1 <= self.absolute_pairs <= len(self.seeds) - 1:
            raise ParamsError(f"n_chance_pairs={self.n_chance_pairs} must be >= 1 and absolute_pairs="
                              f"{self.absolute_pairs} in 1..{len(self.seeds) - 1}")
        if not 0 < self.subspace_dim_frac < 0.5:
            raise ParamsError(f"subspace_dim_frac={self.subspace_dim_frac}: must lie in (0, 0.5) (two subspaces of "
                              f"more than half of d_model always intersect)")


@dataclass(frozen=True, kw_only=True)
class SyntheticParams(Profiled):
    """Ground truth for the consistency measures (`saesanity.synthetic`): TopK SAEs over an L0 sweep on
    `sae_lens.synthetic` activations with known features."""

    n_features: int = param("true features (superposition is n_features / hidden_dim)")
    hidden_dim: int = param("dimension of the synthetic activations")
    zipf_exponent: float = param("exponent of the Zipfian firing probabilities")
    max_prob: float = param("firing probability of the most frequent feature")
    min_prob: float = param("firing probability of the rarest feature")
    hierarchy_roots: int = param("hierarchy trees of depth 1 (parent + children; 0: no hierarchy)")
    hierarchy_branching: int = param("children per parent")
    mutually_exclusive_portion: float = param("share of parents whose children are mutually exclusive")
    correlation_rank: int = param("rank of the low-rank feature correlation (0: independent features)")
    correlation_scale: float = param("scale of those correlations")
    std_magnitude: float = param("spread of a feature's firing magnitude (mean 1)")
    model_seed: int = param("seed of the synthetic model and of its samples", 0)
    n_tokens: int = param("training rows (one epoch, each SAE)")
    n_eval_tokens: int = param("evaluation rows (an independent draw)")
    d_sae: int = param("SAE latents")
    ks: list[int] = param("TopK k values: the L0 sweep")
    seeds: list[int] = param("SAE seeds at every k (all on the same batches)")
    batch_size: int = param("rows per SAE step")
    lr: float = param("Adam learning rate")
    threshold: float = param("cosine threshold of the shared-latent rule", 0.7)
    activations: Activations = param("cached: the training rows generated once and held in memory | streamed: each "
                                     "batch generated as the SAEs train on it (memory: one batch)", "cached")
    device: str = param("cpu | cuda (or cuda:<n>)", "cpu")

    def check(self) -> None:
        super().check()
        if self.n_features < 2 or self.hidden_dim < 2 or self.d_sae < 2:
            raise ParamsError(f"n_features={self.n_features}, hidden_dim={self.hidden_dim}, d_sae={self.d_sae}: need >= 2")
        if not self.ks or any(not 0 < k < self.d_sae for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ParamsError(f"ks={self.ks}: need distinct values with 0 < k < d_sae={self.d_sae}")
        if len(self.seeds) < 3 or len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"seeds={self.seeds}: reappearance needs at least 3 distinct seeds")
        if not 0 < self.min_prob <= self.max_prob <= 1:
            raise ParamsError(f"min_prob={self.min_prob}, max_prob={self.max_prob}: need 0 < min <= max <= 1")
        if self.n_tokens < self.batch_size or self.lr <= 0 or self.n_eval_tokens < 1:
            raise ParamsError(f"n_tokens={self.n_tokens} must hold a batch ({self.batch_size}), lr={self.lr} > 0, "
                              f"n_eval_tokens={self.n_eval_tokens} >= 1")
        if self.hierarchy_roots and self.hierarchy_roots * (1 + self.hierarchy_branching) > self.n_features:
            raise ParamsError(f"hierarchy_roots={self.hierarchy_roots} x (1 + {self.hierarchy_branching}) "
                              f"exceeds n_features={self.n_features}")


@dataclass(frozen=True, kw_only=True)
class ThresholdSweepParams(SeedRunParams):
    """Fig. A2: shared fraction vs cosine threshold under each rule."""

    thresholds: list[float] = param("thresholds to sweep")

    def check(self) -> None:
        super().check()
        if not self.thresholds or any(not 0 <= t <= 1 for t in self.thresholds):
            raise ParamsError(f"thresholds={self.thresholds}: need a non-empty list of values in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class SweepParams(SeedRunParams):
    """Fig. 5 / A4: pairs of seeds swept over dictionary size, k and training tokens (one axis at a time)."""

    sizes: list[int] = param("d_sae values (k and tokens at their base values)")
    ks: list[int] = param("k values (d_sae and tokens at their base values)")
    train_tokens: list[int] = param("training tokens, each at most n_tokens x epochs (d_sae and k at their base "
                                    "values)")

    def check(self) -> None:
        super().check()
        bad = [k for k in self.ks if not 0 < k < self.d_sae] + [s for s in self.sizes if s <= self.k]
        if bad:
            raise ParamsError(f"sweep values {bad} violate 0 < k < d_sae (base d_sae={self.d_sae}, k={self.k})")
        over = [t for t in self.train_tokens if t > self.n_tokens * self.epochs or t < self.batch_size]
        if over:
            raise ParamsError(f"train_tokens {over} must lie in [batch_size={self.batch_size}, n_tokens x epochs="
                              f"{self.n_tokens * self.epochs}]")


@dataclass(frozen=True, kw_only=True)
class LayerArchParams(SeedRunParams):
    """Fig. 4: seed pairs across layers × sizes, hookpoint kinds (MLP vs residual), and architectures."""

    layers: list[int] = param("decoder layers of panels (a) and (b)")
    layer_sizes: list[int] = param("d_sae values at every layer of the first kind in `kinds` (panel a)")
    kinds: list[HookKind] = param("hookpoint kinds compared at d_sae in panel (b), e.g. [mlp_out, resid_post]")
    architectures: list[Architecture] = param("panel (c), at `hookpoint` and d_sae: topk | batchtopk | relu | gated | "
                                              "jumprelu")
    calib_tokens: int = param("tokens of each short run that sets an L1/L0 architecture's coefficient to reach L0 ≈ k")
    calib_runs: int = param("short runs per calibrated architecture")

    def sae_hookpoints(self) -> list[str]:
        return [self.hookpoint] + [f"{kind}.{layer}" for kind in self.kinds for layer in self.layers]

    def check(self) -> None:
        if not self.architectures or not self.kinds:
            raise ParamsError(f"architectures={self.architectures} and kinds={self.kinds} must not be empty")
        if not self.layers or min(self.layers) < 0:
            raise ParamsError(f"layers={self.layers}: need non-negative layer indices")
        super().check()
        bad = [s for s in self.layer_sizes if s <= self.k]
        if bad or not self.layer_sizes:
            raise ParamsError(f"layer_sizes {bad or self.layer_sizes}: need values above k={self.k}")
        if not self.batch_size <= self.calib_tokens <= self.n_tokens or self.calib_runs < 1:
            raise ParamsError(f"calib_tokens={self.calib_tokens} must lie in [batch_size, n_tokens] and "
                              f"calib_runs={self.calib_runs} be >= 1")


@dataclass(frozen=True, kw_only=True)
class VariantSweepParams(SAETraining, ModelData, Profiled):
    """Heap et al.: one TopK SAE per (model variant × layer), evaluated on the same held-out tokens."""

    variants: list[Variant] = param("model variants: trained | rerandomized_incl_emb | rerandomized_excl_emb | init | "
                                    "step0 | control (saesanity.models.VARIANTS)")
    kind: HookKind = param("hookpoint kind at every layer: resid_post (the paper), resid_pre, mlp_out, attn_out")
    layers: list[int] = param("decoder layers (0-based)")
    seed: int = param("SAE initialisation seed", 0)
    n_splice_tokens: int = param("held-out tokens for the CE / KL scores (3 forward passes per SAE)")
    entropy_top_n: int = param("top activations per latent whose token distribution gives its entropy")

    def sae_hookpoints(self) -> list[str]:
        return [f"{self.kind}.{layer}" for layer in self.layers]

    def check(self) -> None:
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise ParamsError(f"variants={self.variants}: need distinct values from {list(typing.get_args(Variant))}")
        if not self.layers or min(self.layers) < 0 or len(set(self.layers)) != len(self.layers):
            raise ParamsError(f"layers={self.layers}: need distinct non-negative layer indices")
        super().check()
        if self.entropy_top_n < 2 or self.n_splice_tokens < self.seq_len:
            raise ParamsError(f"entropy_top_n={self.entropy_top_n} must be >= 2 and n_splice_tokens="
                              f"{self.n_splice_tokens} at least one sequence ({self.seq_len})")


@dataclass(frozen=True, kw_only=True)
class VariantMetricsParams(VariantSweepParams):
    """Heap et al. Fig. 1-3 with the stronger baselines beside the variants (Korznikov et al. 2026; issue 18)."""

    frozen: list[FrozenPart] = param("frozen-weight baselines trained on the trained variant at every layer: decoder "
                                     "| soft_decoder | encoder (baselines.FROZEN; []: none)",
                                     ["decoder", "soft_decoder", "encoder"])
    lookup_null: bool = param("the token / bigram lookup null of every variant and layer (baselines.lookup_null)",
                              True)

    def check(self) -> None:
        super().check()
        if len(set(self.frozen)) != len(self.frozen):
            raise ParamsError(f"frozen={self.frozen}: need distinct parts")


@dataclass(frozen=True, kw_only=True)
class ToyParams(Profiled):
    """Heap et al. Section 4 toy models (`saesanity.toy`)."""

    d: int = param("input dimension")
    n_features: int = param("ground-truth features in the sparsity sweep (superposition is n_features / d)")
    ps: list[float] = param("feature probabilities swept (hypothesis 1)")
    depths: list[int] = param("random residual MLP blocks (0: the identity) for hypothesis 1")
    superpositions: list[int] = param("n_features values swept at p_superposition (hypothesis 1)")
    p_superposition: float = param("feature probability in the superposition sweep")
    h2_depths: list[int] = param("random MLP depths fed dense Gaussian input (hypothesis 2)")
    h2_d_sae: int = param("SAE latents in hypothesis 2")
    h2_k: int = param("SAE k in hypothesis 2")
    n_steps: int = param("SAE steps per fit (one epoch of fresh samples)")
    batch_size: int = param("samples per SAE step")
    seed: int = param("data, network and SAE seed", 0)
    noise_seeds: int = param("seeds every fit is run with (seed, seed + 1, ...): the sd over them is its noise floor", 3)

    def check(self) -> None:
        super().check()
        if self.noise_seeds < 2:
            raise ParamsError(f"noise_seeds={self.noise_seeds}: a noise floor needs at least 2 seeds")
        if not self.ps or any(not 0 < p <= 1 for p in self.ps) or not 0 < self.p_superposition <= 1:
            raise ParamsError(f"ps={self.ps}, p_superposition={self.p_superposition}: probabilities must lie in (0, 1]")
        if not self.depths or not self.h2_depths or min(self.depths + self.h2_depths) < 0:
            raise ParamsError(f"depths={self.depths}, h2_depths={self.h2_depths}: need non-negative depths")
        if not self.superpositions or min(self.superpositions) < 2 or self.n_features < 2:
            raise ParamsError(f"superpositions={self.superpositions}, n_features={self.n_features}: need >= 2 features")
        if not 0 < self.h2_k < self.h2_d_sae:
            raise ParamsError(f"h2_k={self.h2_k}: must satisfy 0 < k < h2_d_sae={self.h2_d_sae}")


@dataclass(frozen=True, kw_only=True)
class InterpFields(_Group):
    """Auto-interpretability settings (`autointerp.pipeline.InterpConfig`, built by `interp_config`)."""

    llm_backend: Backend = param("hf-local | openai-compatible: the chat model that explains (llm explainer) and "
                                 "scores", "hf-local")
    llm_model: str = param("hf-local: a model spec (smollm2-135m); openai-compatible: the served model name",
                           "smollm2-135m")
    api_base: str = param("openai-compatible base URL, e.g. http://localhost:8000/v1 ('' for hf-local)", "")
    api_key_env: str = param("environment variable holding the endpoint's API key", "OPENAI_API_KEY")
    llm_dtype: Dtype = param("hf-local forward-pass dtype: auto (bfloat16 where the CPU has bf16 matrix "
                             "instructions, else float32) | float32 | bfloat16", "auto")
    scorers: list[Scorer] = param("detection | fuzzing | embedding", ["detection", "fuzzing", "embedding"])
    n_explain: int = param("explanation examples per latent, spread over the activation quantiles")
    n_score_act: int = param("activating scoring examples per latent (held out from the explainer)")
    n_score_non: int = param("non-activating scoring examples per latent")
    n_quantiles: int = param("activation quantile bins examples are spread over", 10)
    ctx_len: int = param("tokens per example window", 32)
    highlight_frac: float = param("fuzzing marks the tokens at or above this fraction of the example maximum", 0.3)
    n_boot: int = param("bootstrap resamples of the ROC band")
    interp_seed: int = param("seed of latent and example sampling", 0)
    llm_concurrency: int = param("openai-compatible requests in flight at once (no effect on results)", 32)
    examples_per_prompt: int = param("detection / fuzzing excerpts per prompt (1: the papers' one-excerpt prompts; "
                                     ">1: numbered answers, a malformed reply rescored one per prompt)", 1)

    def explainers_used(self) -> list[str]:
        return [self.explainer]

    def check(self) -> None:
        super().check()
        for e in self.explainers_used():
            interp_config(self, e)
        if self.llm_backend == "openai-compatible" and not self.api_base:
            raise ParamsError("llm_backend='openai-compatible' needs api_base, e.g. 'http://localhost:8000/v1'")
        if self.n_boot < 2:
            raise ParamsError(f"n_boot={self.n_boot}: need at least 2 bootstrap resamples")


def interp_config(S: Any, explainer: str) -> Any:
    """The auto-interp pipeline's configuration for `explainer` from settings `S` (an `InterpFields`, or any object
    with its attributes): every field of `InterpConfig` that `S` has under the same name, `seed` = interp_seed;
    checked."""
    from .autointerp.pipeline import InterpConfig

    given = {f.name: getattr(S, f.name) for f in dataclasses.fields(InterpConfig)
             if f.name not in ("explainer", "scorers", "seed") and hasattr(S, f.name)}
    cfg = InterpConfig(**given, explainer=explainer, scorers=tuple(S.scorers), seed=S.interp_seed)
    try:
        cfg.check()
    except ValueError as err:
        raise ParamsError(str(err)) from None
    return cfg


@dataclass(frozen=True, kw_only=True)
class OneExplainer(InterpFields):
    """The auto-interp settings of a notebook that explains some of its SAEs' latents with one explainer."""

    explainer: Explainer = param("llm | top-tokens (a baseline, no model)", "llm")

    def check(self) -> None:
        super().check()
        if getattr(self, "n_latents", 1) < 1:  # the notebook class's own n_latents
            raise ParamsError(f"n_latents={self.n_latents}: need at least one latent")


@dataclass(frozen=True, kw_only=True)
class InterpCalibrationParams(InterpFields, Text, Profiled):
    """Auto-interp pipeline calibration: synthetic latents with a known token rule vs random-noise latents."""

    rules: list[str] = param("each digit, capitalised, word:W (the word W) or punct:C (contains C); a latent per rule")
    n_noise: int = param("random-noise latents")
    noise_rate: float = param("fraction of tokens a noise latent fires on")
    explainers: list[Explainer] = param("explainers compared: llm | top-tokens")

    def explainers_used(self) -> list[str]:
        return list(self.explainers)

    def check(self) -> None:
        super().check()
        from .autointerp.examples import rule_test

        try:
            [rule_test(r) for r in self.rules]
        except ValueError as err:
            raise ParamsError(str(err)) from None
        if not self.rules or len(set(self.rules)) != len(self.rules):
            raise ParamsError(f"rules={self.rules}: need distinct rules")
        if self.n_noise < 1 or not 0 < self.noise_rate < 1:
            raise ParamsError(f"n_noise={self.n_noise} must be >= 1 and noise_rate={self.noise_rate} in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class VariantInterpParams(OneExplainer, VariantSweepParams):
    """Heap et al. App. B: auto-interp ROC of the (variant × layer) SAEs of `heap_metrics_vs_layer`."""

    n_latents: int = param("latents sampled per (variant, layer) SAE among the eligible ones")
    interp_layers: list[int] = param("layers (a subset of `layers`) whose SAEs are explained and scored")

    def check(self) -> None:
        super().check()
        bad = [layer for layer in self.interp_layers if layer not in self.layers]
        if bad or not self.interp_layers:
            raise ParamsError(f"interp_layers {bad or self.interp_layers}: need a non-empty subset of layers={self.layers}")


@dataclass(frozen=True, kw_only=True)
class SeedInterpParams(OneExplainer, SeedRunParams):
    """Paulo & Belrose Fig. 3 / Table 1: auto-interp scores of seed-0 latents and their seed-1 partners."""

    n_latents: int = param("seed-0 latents sampled, evenly over how many seeds share them (each with its seed-1 "
                           "partner)")


@dataclass(frozen=True, kw_only=True)
class StitchParams(SeedRunParams):
    """Leask et al.: a family of SAE sizes on Fig. 1's activations (seed `seeds[0]`), stitching, meta-SAEs."""

    sizes: list[int] = param("d_sae of the size family, ascending (the paper doubles: 768 x 2^n)")
    release: str = param("a SAELens release to load the family from instead of training it (empty: train our own)", "")
    release_id: str = param("that release's SAE id with {size} for d_sae, e.g. blocks.8.hook_resid_pre_{size}", "")
    theta: float = param("decoder-cosine threshold between novel and reconstruction latents")
    thetas: list[float] = param("thresholds of the novel-fraction curve")
    n_stitch_tokens: int = param("held-out rows on which stitched MSE and L0 are measured")
    meta_sizes: list[int] = param("meta-SAE widths, trained on the decoder of the largest SAE in sizes")
    meta_k: int = param("meta-SAE BatchTopK k (the paper: 4)")
    meta_epochs: int = param("passes over the decoder rows")
    meta_lr: float = param("meta-SAE Adam learning rate")
    meta_batch_size: int = param("decoder rows per meta-SAE step")
    n_meta_examples: int = param("meta-latents shown with the base latents they group")

    def check(self) -> None:
        super().check()
        if len(self.sizes) < 2 or sorted(set(self.sizes)) != self.sizes or self.sizes[0] <= self.k:
            raise ParamsError(f"sizes={self.sizes}: need >= 2 ascending distinct sizes above k={self.k}")
        if self.release and "{size}" not in self.release_id:
            raise ParamsError(f"release_id={self.release_id!r} must contain {{size}} when release is set")
        if not 0 < self.theta < 1 or not self.thetas or any(not 0 <= t <= 1 for t in self.thetas):
            raise ParamsError(f"theta={self.theta} must lie in (0, 1) and thetas={self.thetas} in [0, 1]")
        if not self.meta_sizes or not 0 < self.meta_k < min(self.meta_sizes):
            raise ParamsError(f"meta_k={self.meta_k} must satisfy 0 < meta_k < min(meta_sizes={self.meta_sizes})")
        if self.meta_epochs < 1 or self.n_stitch_tokens < 1 or self.n_meta_examples < 1:
            raise ParamsError("meta_epochs, n_stitch_tokens and n_meta_examples must be >= 1")


@dataclass(frozen=True, kw_only=True)
class StitchArchParams(StitchParams):
    """Leask et al.'s measures on a Matryoshka size family beside the TopK one (`stitching.matryoshka_suite`)."""

    matryoshka_widths: list[int] = param("inner widths m_1 < ... of the largest size's matryoshka SAE; each smaller "
                                         "size's are these scaled by size / largest (so the same fractions)")

    def check(self) -> None:
        super().check()
        if self.release:
            raise ParamsError(f"release={self.release!r}: the matryoshka comparison trains both families itself")
        w, top = list(self.matryoshka_widths), self.sizes[-1]
        if not w or w != sorted(set(w)) or w[0] < 1 or w[-1] >= top:
            raise ParamsError(f"matryoshka_widths={w}: strictly increasing inner widths in 1..{top - 1}")
        for s in self.sizes:
            scaled = [v * s / top for v in w]
            if any(v != int(v) for v in scaled) or len(set(map(int, scaled))) != len(w) or int(scaled[0]) < 1:
                raise ParamsError(f"matryoshka_widths={w} scaled to size {s} give {scaled}: need distinct whole widths "
                                  f">= 1 at every size (multiples of {top // s} for sizes {self.sizes})")


REGISTRY: dict[str, type] = {
    "paulo_fig1_matched_cosines": SeedRunParams,
    "paulo_fig2_similarity_vs_frequency": SeedRunParams,
    "paulo_figA1_power_law_offset": PowerLawParams,
    "paulo_figA2_threshold_rules": ThresholdSweepParams,
    "paulo_figA3_hungarian_vs_max": SeedRunParams,
    "paulo_fig5_overlap_vs_size_k_tokens": SweepParams,
    "paulo_figA4_mean_cosines_vs_size_k_tokens": SweepParams,
    "paulo_fig4_overlap_vs_layer_position_arch": LayerArchParams,
    "heap_metrics_vs_layer": VariantMetricsParams,
    "heap_token_entropy": VariantSweepParams,
    "heap_toy_models": ToyParams,
    "autointerp_calibration": InterpCalibrationParams,
    "heap_figB_autointerp_roc": VariantInterpParams,
    "paulo_fig3_interp_vs_sharing": SeedInterpParams,
    "paulo_table1_unpaired_explanations": SeedInterpParams,
    "leask_novel_fraction": StitchParams,
    "leask_stitching": StitchParams,
    "leask_meta_sae": StitchParams,
    "consistency_seeds": ConsistencyParams,
    "consistency_matryoshka": ArchSeedParams,
    "consistency_synthetic": SyntheticParams,
    "leask_matryoshka": StitchArchParams,
}
# notebooks that must share Fig. 1's activations and SAE configuration (so they reuse its SAEs);
# Fig. 4 trains shorter, smaller SAEs at many hookpoints (its own budget), so it is not one of them;
# Leask et al. shares them offline but its `paper` profile is GPT-2's SAELens release (tested separately)
SEED_FAMILY = [stem for stem, cls in REGISTRY.items()
               if issubclass(cls, SeedRunParams) and not issubclass(cls, (LayerArchParams, StitchParams))]


def params_class(stem: str) -> type:
    try:
        return REGISTRY[stem]
    except KeyError:
        raise ParamsError(f"no parameter schema for notebook '{stem}'; known: {sorted(REGISTRY)}") from None


class _NotOneOf(TypeError):
    """A value outside its Literal enumeration (the message lists the valid ones)."""


def _type_ok(value: Any, tp: Any) -> Any:
    """Return `value` coerced to type `tp` (int -> float allowed) or raise TypeError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _NotOneOf(f"valid: {list(typing.get_args(tp))}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        return [_type_ok(v, inner) for v in value]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # allow 1e6 in YAML for a count
    if tp in (int, float) and isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if not isinstance(value, tp):
        raise TypeError(f"expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _defaults(cls: type) -> dict[str, Any]:
    """The class defaults of `cls`'s fields that have one."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def build(stem: str, values: dict[str, Any]) -> Any:
    """Validate a flat mapping of parameter values against the stem's dataclass (fields not given keep their
    class default; a field without one must be given)."""
    cls = params_class(stem)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ParamsError(f"{stem}: unknown parameter(s) {unknown}; valid: {names}")
    values = {**_defaults(cls), **values}
    missing = [n for n in names if n not in values]
    if missing:
        raise ParamsError(f"{stem}: missing parameter(s) {missing}")
    coerced = {}
    for n in names:
        try:
            coerced[n] = _type_ok(values[n], hints[n])
        except _NotOneOf as err:
            raise ParamsError(f"{stem}: {n}={values[n]!r}; {err}") from None
        except TypeError as err:
            raise ParamsError(f"{stem}: parameter {n}={values[n]!r}: {err}") from None
    obj = cls(**coerced)
    obj.check()
    return obj


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_profiles(stem: str, params_dir: Path | None = None, _chain: tuple[str, ...] = ()) -> dict[str, dict]:
    """The profile sections of `params/<stem>.yaml`. A file that starts `same_as: <other stem>` holds only what
    differs from that notebook's file: each of its sections overlays the other file's section of the same name,
    key by key (the other file may itself be `same_as` a third)."""
    path = (params_dir or PARAMS_DIR) / f"{stem}.yaml"
    if not path.exists():
        raise ParamsError(f"no parameter file {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path.name}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path.name}: expected a mapping of profile names to sections")
    parent = data.pop("same_as", None)
    bad = sorted(set(data) - set(PROFILES))
    if bad:
        raise ParamsError(f"{path.name}: unknown profile(s) {bad}; valid: {list(PROFILES)} (and same_as)")
    for name, section in data.items():
        if section is not None and not isinstance(section, dict):
            raise ParamsError(f"{path.name}: profile {name!r} must be a mapping of parameter names to values")
    if parent is not None:
        if not isinstance(parent, str) or parent == stem or parent in _chain:
            raise ParamsError(f"{path.name}: same_as={parent!r} must name another notebook's parameter file, "
                              f"without a cycle ({' -> '.join((*_chain, stem, str(parent)))})")
        base = read_profiles(parent, params_dir, (*_chain, stem))
        data = {name: {**(base.get(name) or {}), **(data.get(name) or {})} for name in PROFILES
                if name in base or name in data}
    if "default" not in data:
        raise ParamsError(f"{path.name}: needs a `default` profile (or same_as another file)")
    return data


def profile_values(stem: str, profile: str, params_dir: Path | None = None) -> dict[str, Any]:
    """Every parameter value of one profile, flat: the class defaults, overlaid with the file's `default`
    section, then with its base profile's section (`BASE_PROFILE`: paper-mini's is `paper`), then with the
    profile's own section."""
    data = read_profiles(stem, params_dir)
    if profile not in data:
        raise ParamsError(f"{stem}: unknown profile {profile!r}; this file has {sorted(data)}")
    values = {**_defaults(params_class(stem)), **(data["default"] or {})}
    if profile in BASE_PROFILE:
        values.update(data.get(BASE_PROFILE[profile]) or {})
    values.update(data[profile] or {})
    values["profile"] = profile
    order = [f.name for f in dataclasses.fields(params_class(stem))]
    return dict(sorted(values.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))


def load(stem: str, profile: str = "default", params_dir: Path | None = None, **overrides: Any) -> Any:
    """Typed parameters of `stem` under `profile`, with keyword overrides applied last."""
    values = profile_values(stem, profile, params_dir)
    values.update(overrides)
    return build(stem, values)


def _injected_names(namespace: dict[str, Any]) -> list[str]:
    """The names papermill's injected-parameters cell assigns, read from the kernel's input history (`_ih`);
    empty when the notebook runs by hand (no such cell)."""
    for source in reversed(namespace.get("_ih") or []):
        if isinstance(source, str) and source.startswith("# Parameters\n"):
            try:
                tree = ast.parse(source)
            except SyntaxError:
                return []
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def from_namespace(stem: str, namespace: dict[str, Any]) -> Any:
    """Collect a notebook's parameter variables (its globals) and validate them. A parameter papermill was given
    (`-p name value`) that this notebook does not have is an error, not papermill's warning and a silent run on
    the value from params/."""
    names = [f.name for f in dataclasses.fields(params_class(stem))]
    unknown = [n for n in _injected_names(namespace) if n not in names]
    if unknown:
        hints = "".join(f"; {n!r}: did you mean {close[0]!r}?" for n in unknown
                        if (close := difflib.get_close_matches(n, names, 1)))
        raise ParamsError(f"{stem}: unknown parameter(s) {unknown}{hints} "
                          f"(python -m saesanity.params --help {stem} lists them)")
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ParamsError(f"{stem}: the parameters cell does not define {missing}")
    return build(stem, {n: namespace[n] for n in names})


def parameters_cell(stem: str) -> str:
    """The source of `stem`'s notebook parameters cell: every parameter at its `default`-profile value, each with
    its documentation line as a comment (what `papermill --help-notebook` shows). Written into the notebooks by
    `python -m saesanity.params cell <stem>...`; tests/test_params.py checks each notebook holds it."""
    values = profile_values(stem, "default")
    hints = typing.get_type_hints(params_class(stem))
    return "\n".join(f"{f.name}: {_annotation(hints[f.name])} = {values[f.name]!r}  # {f.metadata['doc']}"
                     for f in dataclasses.fields(params_class(stem)))


def _annotation(tp: Any) -> str:
    """A type as the parameters cell writes it, in the form papermill reads (a Literal is its values' type)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return type(typing.get_args(tp)[0]).__name__
    if origin is list:
        return f"list[{_annotation(typing.get_args(tp)[0])}]"
    return tp.__name__


def describe(stem: str) -> str:
    """`python -m saesanity.params --help <stem>`: each parameter's type, its value under every profile where it
    differs from `default`, and its documentation."""
    cls = params_class(stem)
    hints = typing.get_type_hints(cls)
    values = {p: profile_values(stem, p) for p in PROFILES if p in read_profiles(stem)}
    lines = [f"{stem}: {cls.__name__} — {(cls.__doc__ or '').strip()}", ""]
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = (f"one of {list(typing.get_args(tp))}" if typing.get_origin(tp) is Literal
                else getattr(tp, "__name__", str(tp)) if typing.get_origin(tp) is None else str(tp))
        lines.append(f"{f.name} ({name}): {f.metadata['doc']}")
        shown = {p: v[f.name] for p, v in values.items() if p == "default" or v[f.name] != values["default"][f.name]}
        lines.append("    " + "; ".join(f"{p}: {v!r}" for p, v in shown.items() if f.name != "profile"))
    return "\n".join(line for line in lines if line.strip() or line == "")


def write_parameters_cell(stem: str) -> bool:
    """Replace the notebook's parameters cell by `parameters_cell(stem)`; True if it changed."""
    import nbformat

    from .paths import NOTEBOOKS_DIR

    path = NOTEBOOKS_DIR / f"{stem}.ipynb"
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    new = parameters_cell(stem)
    if cell.source == new:
        return False
    cell.source = new
    nbformat.write(nb, path)
    return True


USAGE = """usage: python -m saesanity.params <stem> <profile>     the profile's flat values (YAML), validated
       python -m saesanity.params --help <stem>         every parameter: type, values by profile, meaning
       python -m saesanity.params cell <stem>...        rewrite the notebooks' parameters cells from params/"""


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "cell":
        for stem in argv[1:]:
            print(f"{stem}: {'rewritten' if write_parameters_cell(stem) else 'unchanged'}")
        return 0
    if len(argv) == 2 and argv[0] in ("--help", "-h"):
        print(describe(argv[1]))
        return 0
    if len(argv) != 2 or argv[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    stem, profile = argv
    try:
        values = profile_values(stem, profile)
        build(stem, values)  # fail here, before papermill starts, on a bad file
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    yaml.safe_dump(values, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
