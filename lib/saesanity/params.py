"""Notebook parameters: `params/<stem>.yaml` profiles -> a typed, validated dataclass.

Each YAML file maps profile names (`smoke`, `default`, `paper-mini`, `paper`) to parameter values.
`default` must give every parameter; other profiles override some of them. Unknown keys, unknown
profiles, values of the wrong type and conflicting options are rejected with a message naming the
bad value.

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

import dataclasses
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .paths import PARAMS_DIR

PROFILES = ("smoke", "default", "paper-mini", "paper")
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
                     "n_score_non", "n_steps", "n_noise"], "size"),
    **dict.fromkeys(["sizes", "ks", "train_tokens", "layer_sizes", "meta_sizes"], "scaled list"),
    **dict.fromkeys(["layers", "interp_layers", "ps", "depths", "superpositions", "h2_depths", "rules"], "subset"),
    "noise_rate": "follows n_eval_tokens (a noise latent needs enough firings)",
    "sparsify_overrides": "size: the recipe's batch (sequences), accumulation and warm-up steps shrunk to the "
                          "stand-in's token budget (paper profiles override nothing)",
}


class ParamsError(ValueError):
    """A parameter file or value is wrong; the message says which and what would be valid."""


def _check_dtype(name: str, value: str) -> None:
    from .models import DTYPES

    if value not in DTYPES:
        raise ParamsError(f"{name}={value!r}; valid: {list(DTYPES)}")


ACTIVATIONS = ("cached", "streamed")


def _check_activations(P) -> None:
    if P.activations not in ACTIVATIONS:
        raise ParamsError(f"activations={P.activations!r}; valid: {list(ACTIVATIONS)}")
    if P.stream_buffer_tokens < P.batch_size:
        raise ParamsError(f"stream_buffer_tokens={P.stream_buffer_tokens} must hold at least one SAE batch "
                          f"({P.batch_size})")


TRAINERS = ("ours", "sparsify")
AUTOCASTS = ("none", "bf16")


def _check_trainer(P, hookpoints: list[str]) -> None:
    """sae_autocast / trainer / sparsify_recipe / sparsify_overrides: a known autocast, trainer and recipe,
    overrides of recipe fields the profile does not set itself, and hookpoints sparsify can train on (module
    outputs: not resid_pre)."""
    from .sae.sparsify_trainer import RECIPE_FIELDS, RECIPES

    if P.sae_autocast not in AUTOCASTS:
        raise ParamsError(f"sae_autocast={P.sae_autocast!r}; valid: {list(AUTOCASTS)}")
    if P.trainer not in TRAINERS:
        raise ParamsError(f"trainer={P.trainer!r}; valid: {list(TRAINERS)}")
    if P.sparsify_recipe not in RECIPES:
        raise ParamsError(f"sparsify_recipe={P.sparsify_recipe!r}; valid: {list(RECIPES)}")
    own = {"num_latents": "d_sae", "expansion_factor": "d_sae", "k": "k", "ctx_len": "seq_len"}
    for name in P.sparsify_overrides:
        if name in own:
            raise ParamsError(f"sparsify_overrides sets {name!r}: the profile's {own[name]} sets it")
        if name not in RECIPE_FIELDS:
            raise ParamsError(f"sparsify_overrides: unknown recipe field {name!r}; valid: "
                              f"{[f for f in RECIPE_FIELDS if f not in own]}")
    if P.trainer == "sparsify":
        bad = [h for h in hookpoints if h.startswith("resid_pre")]
        if bad:
            raise ParamsError(f"trainer=sparsify trains on module outputs; hookpoints {bad} are resid_pre "
                              f"(use resid_post of the layer before)")


@dataclass(frozen=True)
class SeedRunParams:
    """TopK SAEs of several seeds on one activation set (Paulo & Belrose Fig. 1, 2, A2, A3)."""

    profile: str  # which profile these values came from: smoke | default | paper-mini | paper
    model: str  # model spec: `smollm2-135m`, `smollm2-tiny-random`, `standin:<hub name>`, `org/name@revision`, a folder
    variant: str  # trained | rerandomized_incl_emb | rerandomized_excl_emb | init | step0 | control
    corpus: str  # `debian` (all sources), `debian:austen,web`, `hf:<dataset>[:<config>]`, or `standin:<name>`
    hookpoint: str  # e.g. `mlp_out.6` (MLP output of layer 6); resid_post.L, attn_out.L also exist
    n_tokens: int  # training tokens of activations collected (and seen by each SAE, one epoch)
    seq_len: int  # tokens per sequence fed to the model
    model_batch_size: int  # sequences per model forward pass during collection
    model_dtype: str  # float32 | bfloat16 | float16: dtype of the model's forward pass (activations kept fp32)
    data_seed: int  # seed of the corpus shuffle and of the SAE batch order (shared by all SAE seeds)
    d_sae: int  # number of latents
    k: int  # active latents per token (TopK)
    batch_size: int  # tokens per SAE optimisation step
    lr: float  # Adam learning rate
    auxk_alpha: float  # weight of the AuxK loss on dead latents (0 disables it)
    seeds: list[int]  # SAE initialisation seeds (all see the same batches); pair figures compare the first two
    threshold: float  # cosine threshold of the shared-latent rule
    n_eval_tokens: int  # held-out tokens for FVU / L0 of the trained SAEs
    device: str  # cpu | cuda
    activations: str  # cached: training activations collected once to a memmap | streamed: SAEs fed by the model forward (no activation cache; the paper profiles)
    stream_buffer_tokens: int  # rows of the streamed shuffle buffer (memory: this × d_model floats), rounded down to whole batches
    trainer: str  # ours: saesanity.sae.train | sparsify: EleutherAI's sparsify trains the TopK SAEs (the papers' engine; other architectures stay ours)
    sparsify_recipe: str  # with trainer=sparsify: paulo_belrose_2025 | heap_2025 | sparsify_1.3.3 (sae.sparsify_trainer.RECIPES)
    sparsify_overrides: dict  # recipe fields changed (batch_size in sequences, lr, lr_warmup_steps, ...); d_sae, k, seq_len come from the profile
    sae_autocast: str  # none: fp32 SAE forward | bf16: our trainer's SAE forward under torch.autocast(bfloat16), fp32 parameters and Adam (sparsify keeps its own precision)

    def check(self) -> None:
        _check_dtype("model_dtype", self.model_dtype)
        _check_activations(self)
        _check_trainer(self, [self.hookpoint])
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ParamsError(f"seeds={self.seeds}: need at least two distinct seeds")
        if not 0.0 < self.threshold < 1.0:
            raise ParamsError(f"threshold={self.threshold}: must lie in (0, 1)")
        if not 0 < self.k < self.d_sae:
            raise ParamsError(f"k={self.k}: must satisfy 0 < k < d_sae={self.d_sae}")
        if self.n_tokens < self.batch_size:
            raise ParamsError(f"n_tokens={self.n_tokens} is smaller than one SAE batch ({self.batch_size})")


@dataclass(frozen=True)
class PowerLawParams(SeedRunParams):
    """Fig. A1: only-in-base fraction vs number of SAEs, with fits and a bootstrap over base seeds."""

    n_boot: int  # bootstrap resamples of the base seeds for the fit's offset c
    max_draws: int  # (subset, base) pairs per N; all of them are used when there are fewer

    def check(self) -> None:
        super().check()
        if len(self.seeds) < 5:
            raise ParamsError(f"seeds={self.seeds}: a 3-parameter fit over N = 2…n needs n >= 5 seeds")


@dataclass(frozen=True)
class ThresholdSweepParams(SeedRunParams):
    """Fig. A2: shared fraction vs cosine threshold under each rule."""

    thresholds: list[float]  # thresholds to sweep

    def check(self) -> None:
        super().check()
        if not self.thresholds or any(not 0 <= t <= 1 for t in self.thresholds):
            raise ParamsError(f"thresholds={self.thresholds}: need a non-empty list of values in [0, 1]")


@dataclass(frozen=True)
class SweepParams(SeedRunParams):
    """Fig. 5 / A4: pairs of seeds swept over dictionary size, k and training tokens (one axis at a time)."""

    sizes: list[int]  # d_sae values (k and tokens at their base values)
    ks: list[int]  # k values (d_sae and tokens at their base values)
    train_tokens: list[int]  # training tokens, each <= n_tokens (d_sae and k at their base values)

    def check(self) -> None:
        super().check()
        bad = [k for k in self.ks for s in [self.d_sae] if not 0 < k < s] + [s for s in self.sizes if s <= self.k]
        if bad:
            raise ParamsError(f"sweep values {bad} violate 0 < k < d_sae (base d_sae={self.d_sae}, k={self.k})")
        over = [t for t in self.train_tokens if t > self.n_tokens or t < self.batch_size]
        if over:
            raise ParamsError(f"train_tokens {over} must lie in [batch_size={self.batch_size}, n_tokens={self.n_tokens}]")


@dataclass(frozen=True)
class LayerArchParams(SeedRunParams):
    """Fig. 4: seed pairs across layers × sizes, hookpoint kinds (MLP vs residual), and architectures."""

    layers: list[int]  # decoder layers of panels (a) and (b)
    layer_sizes: list[int]  # d_sae values at every layer of the first kind in `kinds` (panel a)
    kinds: list[str]  # hookpoint kinds compared at d_sae in panel (b), e.g. [mlp_out, resid_post]
    architectures: list[str]  # panel (c), at `hookpoint` and d_sae: topk | batchtopk | relu | gated | jumprelu
    calib_tokens: int  # tokens of each short run that sets an L1/L0 architecture's coefficient to reach L0 ≈ k
    calib_runs: int  # short runs per calibrated architecture

    def check(self) -> None:
        super().check()
        from .sae.arch import ARCHITECTURES

        bad = [a for a in self.architectures if a not in ARCHITECTURES]
        if bad or not self.architectures:
            raise ParamsError(f"architectures {bad or self.architectures}: valid {list(ARCHITECTURES)}")
        bad = [k for k in self.kinds if k not in ("resid_pre", "resid_post", "mlp_out", "attn_out")]
        if bad or not self.kinds:
            raise ParamsError(f"kinds {bad or self.kinds}: valid ['resid_pre', 'resid_post', 'mlp_out', 'attn_out']")
        _check_trainer(self, [f"{kind}.{layer}" for kind in self.kinds for layer in self.layers])
        if not self.layers or min(self.layers) < 0:
            raise ParamsError(f"layers={self.layers}: need non-negative layer indices")
        bad = [s for s in self.layer_sizes if s <= self.k]
        if bad or not self.layer_sizes:
            raise ParamsError(f"layer_sizes {bad or self.layer_sizes}: need values above k={self.k}")
        if not self.batch_size <= self.calib_tokens <= self.n_tokens or self.calib_runs < 1:
            raise ParamsError(f"calib_tokens={self.calib_tokens} must lie in [batch_size, n_tokens] and "
                              f"calib_runs={self.calib_runs} be >= 1")


@dataclass(frozen=True)
class VariantSweepParams:
    """Heap et al.: one TopK SAE per (model variant × layer), evaluated on the same held-out tokens."""

    profile: str  # which profile these values came from: smoke | default | paper-mini | paper
    model: str  # model spec (see SeedRunParams.model)
    variants: list[str]  # trained | rerandomized_incl_emb | rerandomized_excl_emb | init | step0 | control
    corpus: str  # corpus spec (see SeedRunParams.corpus)
    kind: str  # hookpoint kind at every layer: resid_post (the paper), resid_pre, mlp_out, attn_out
    layers: list[int]  # decoder layers (0-based)
    n_tokens: int  # training tokens per variant (activations collected; one epoch per SAE)
    seq_len: int  # tokens per sequence fed to the model
    model_batch_size: int  # sequences per model forward pass
    model_dtype: str  # float32 | bfloat16 | float16: dtype of the model's forward pass
    data_seed: int  # corpus shuffle and SAE batch order
    d_sae: int  # number of latents
    k: int  # active latents per token (TopK)
    batch_size: int  # tokens per SAE optimisation step
    lr: float  # Adam learning rate
    auxk_alpha: float  # AuxK loss weight
    seed: int  # SAE initialisation seed
    n_eval_tokens: int  # held-out tokens for reconstruction metrics and token entropy
    n_splice_tokens: int  # held-out tokens for the CE / KL scores (3 forward passes per SAE)
    entropy_top_n: int  # top activations per latent whose token distribution gives its entropy
    device: str  # cpu | cuda
    activations: str  # cached | streamed (see SeedRunParams.activations)
    stream_buffer_tokens: int  # rows of the streamed shuffle buffer (see SeedRunParams.stream_buffer_tokens)
    trainer: str  # ours | sparsify (see SeedRunParams.trainer)
    sparsify_recipe: str  # see SeedRunParams.sparsify_recipe
    sparsify_overrides: dict  # see SeedRunParams.sparsify_overrides
    sae_autocast: str  # none | bf16 (see SeedRunParams.sae_autocast)

    def check(self) -> None:
        from .activations import HOOK_KINDS
        from .models import VARIANTS

        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants or len(set(self.variants)) != len(self.variants):
            raise ParamsError(f"variants {bad or self.variants}: need distinct values from {list(VARIANTS)}")
        if self.kind not in HOOK_KINDS:
            raise ParamsError(f"kind={self.kind!r}; valid: {list(HOOK_KINDS)}")
        if not self.layers or min(self.layers) < 0 or len(set(self.layers)) != len(self.layers):
            raise ParamsError(f"layers={self.layers}: need distinct non-negative layer indices")
        _check_dtype("model_dtype", self.model_dtype)
        _check_activations(self)
        _check_trainer(self, [f"{self.kind}.{layer}" for layer in self.layers])
        if not 0 < self.k < self.d_sae:
            raise ParamsError(f"k={self.k}: must satisfy 0 < k < d_sae={self.d_sae}")
        if self.n_tokens < self.batch_size:
            raise ParamsError(f"n_tokens={self.n_tokens} is smaller than one SAE batch ({self.batch_size})")
        if self.entropy_top_n < 2 or self.n_splice_tokens < self.seq_len:
            raise ParamsError(f"entropy_top_n={self.entropy_top_n} must be >= 2 and n_splice_tokens="
                              f"{self.n_splice_tokens} at least one sequence ({self.seq_len})")


@dataclass(frozen=True)
class ToyParams:
    """Heap et al. Section 4 toy models (`saesanity.toy`)."""

    profile: str  # which profile these values came from: smoke | default | paper-mini | paper
    d: int  # input dimension
    n_features: int  # ground-truth features in the sparsity sweep (n_features / d = superposition)
    ps: list[float]  # feature probabilities swept (hypothesis 1)
    depths: list[int]  # random residual MLP blocks (0 = identity) for hypothesis 1
    superpositions: list[int]  # n_features values swept at p = p_superposition (hypothesis 1)
    p_superposition: float  # feature probability in the superposition sweep
    h2_depths: list[int]  # random MLP depths fed dense Gaussian input (hypothesis 2)
    h2_d_sae: int  # SAE latents in hypothesis 2
    h2_k: int  # SAE k in hypothesis 2
    n_steps: int  # SAE steps per fit (one epoch of fresh samples)
    batch_size: int  # samples per SAE step
    seed: int  # data, network and SAE seed

    def check(self) -> None:
        if not self.ps or any(not 0 < p <= 1 for p in self.ps) or not 0 < self.p_superposition <= 1:
            raise ParamsError(f"ps={self.ps}, p_superposition={self.p_superposition}: probabilities must lie in (0, 1]")
        if not self.depths or not self.h2_depths or min(self.depths + self.h2_depths) < 0:
            raise ParamsError(f"depths={self.depths}, h2_depths={self.h2_depths}: need non-negative depths")
        if not self.superpositions or min(self.superpositions) < 2 or self.n_features < 2:
            raise ParamsError(f"superpositions={self.superpositions}, n_features={self.n_features}: need >= 2 features")
        if not 0 < self.h2_k < self.h2_d_sae:
            raise ParamsError(f"h2_k={self.h2_k}: must satisfy 0 < k < h2_d_sae={self.h2_d_sae}")


@dataclass(frozen=True)
class InterpFields:
    """Auto-interpretability settings shared by the auto-interp notebooks (`autointerp.pipeline.InterpConfig`)."""

    llm_backend: str  # hf-local | openai-compatible: the chat model that explains (llm explainer) and scores
    llm_model: str  # hf-local: a model spec (smollm2-135m); openai-compatible: the served model name
    api_base: str  # openai-compatible base URL, e.g. http://localhost:8000/v1 ('' for hf-local)
    api_key_env: str  # environment variable holding the endpoint's API key
    llm_dtype: str  # hf-local forward-pass dtype: float32 | bfloat16
    scorers: list[str]  # detection | fuzzing | embedding
    n_explain: int  # explanation examples per latent, spread over the activation quantiles
    n_score_act: int  # activating scoring examples per latent (held out from the explainer)
    n_score_non: int  # non-activating scoring examples per latent
    n_quantiles: int  # activation quantile bins examples are spread over
    ctx_len: int  # tokens per example window
    highlight_frac: float  # fuzzing marks the tokens at or above this fraction of the example maximum
    n_boot: int  # bootstrap resamples of the ROC band
    interp_seed: int  # seed of latent and example sampling
    llm_concurrency: int  # openai-compatible requests in flight at once (no effect on results)
    examples_per_prompt: int  # detection / fuzzing excerpts per prompt (1: the papers' one-excerpt prompts; >1: numbered answers, a malformed reply rescored one per prompt)

    def check_interp(self, explainers: list[str]) -> None:
        from .autointerp.pipeline import InterpConfig

        for e in explainers:
            try:
                InterpConfig(explainer=e, llm_backend=self.llm_backend, scorers=tuple(self.scorers),
                             n_explain=self.n_explain, n_score_act=self.n_score_act, n_score_non=self.n_score_non,
                             n_quantiles=self.n_quantiles, ctx_len=self.ctx_len,
                             highlight_frac=self.highlight_frac, examples_per_prompt=self.examples_per_prompt,
                             llm_concurrency=self.llm_concurrency).check()
            except ValueError as err:
                raise ParamsError(str(err)) from None
        _check_dtype("llm_dtype", self.llm_dtype)
        if self.llm_backend == "openai-compatible" and not self.api_base:
            raise ParamsError("llm_backend='openai-compatible' needs api_base, e.g. 'http://localhost:8000/v1'")
        if self.n_boot < 2:
            raise ParamsError(f"n_boot={self.n_boot}: need at least 2 bootstrap resamples")
        if getattr(self, "n_latents", 1) < 1:
            raise ParamsError(f"n_latents={self.n_latents}: need at least one latent")


@dataclass(frozen=True)
class InterpCalibrationParams(InterpFields):
    """Auto-interp pipeline calibration: synthetic latents with a known token rule vs random-noise latents."""

    profile: str  # which profile these values came from: smoke | default | paper-mini | paper
    model: str  # model spec whose tokenizer and held-out text give the examples (see SeedRunParams.model)
    corpus: str  # corpus spec (see SeedRunParams.corpus)
    seq_len: int  # tokens per held-out sequence
    data_seed: int  # corpus shuffle seed
    n_eval_tokens: int  # held-out tokens the synthetic latents are evaluated on
    rules: list[str]  # each digit, capitalised, word:W (the word W) or punct:C (contains C); a latent per rule
    n_noise: int  # random-noise latents
    noise_rate: float  # fraction of tokens a noise latent fires on
    explainers: list[str]  # explainers compared: llm | top-tokens

    def check(self) -> None:
        self.check_interp(self.explainers)
        from .autointerp.examples import rule_test

        try:
            [rule_test(r) for r in self.rules]
        except ValueError as err:
            raise ParamsError(str(err)) from None
        if not self.rules or len(set(self.rules)) != len(self.rules):
            raise ParamsError(f"rules={self.rules}: need distinct rules")
        if self.n_noise < 1 or not 0 < self.noise_rate < 1:
            raise ParamsError(f"n_noise={self.n_noise} must be >= 1 and noise_rate={self.noise_rate} in (0, 1)")


@dataclass(frozen=True)
class VariantInterpParams(VariantSweepParams, InterpFields):
    """Heap et al. App. B: auto-interp ROC of the (variant × layer) SAEs of `heap_metrics_vs_layer`."""

    explainer: str  # llm | top-tokens (baseline)
    n_latents: int  # latents sampled per (variant, layer) SAE among the eligible ones
    interp_layers: list[int]  # layers (a subset of `layers`) whose SAEs are explained and scored

    def check(self) -> None:
        VariantSweepParams.check(self)
        self.check_interp([self.explainer])
        bad = [layer for layer in self.interp_layers if layer not in self.layers]
        if bad or not self.interp_layers:
            raise ParamsError(f"interp_layers {bad or self.interp_layers}: need a non-empty subset of layers={self.layers}")


@dataclass(frozen=True)
class SeedInterpParams(SeedRunParams, InterpFields):
    """Paulo & Belrose Fig. 3 / Table 1: auto-interp scores of seed-0 latents and their seed-1 partners."""

    explainer: str  # llm | top-tokens (baseline)
    n_latents: int  # seed-0 latents sampled, evenly over how many seeds share them (each with its seed-1 partner)

    def check(self) -> None:
        SeedRunParams.check(self)
        self.check_interp([self.explainer])


@dataclass(frozen=True)
class StitchParams(SeedRunParams):
    """Leask et al.: a family of SAE sizes on Fig. 1's activations (seed `seeds[0]`), stitching, meta-SAEs."""

    sizes: list[int]  # d_sae of the size family, ascending (the paper doubles: 768 x 2^n)
    release: str  # a SAELens release to load the family from instead of training it ('' = train our own)
    release_id: str  # that release's SAE id with {size} for d_sae, e.g. blocks.8.hook_resid_pre_{size}
    theta: float  # decoder-cosine threshold between novel and reconstruction latents
    thetas: list[float]  # thresholds of the novel-fraction curve
    n_stitch_tokens: int  # held-out rows on which stitched MSE and L0 are measured
    meta_sizes: list[int]  # meta-SAE widths, trained on the decoder of the largest SAE in sizes
    meta_k: int  # meta-SAE BatchTopK k (the paper: 4)
    meta_epochs: int  # passes over the decoder rows
    meta_lr: float  # meta-SAE Adam learning rate
    meta_batch_size: int  # decoder rows per meta-SAE step
    n_meta_examples: int  # meta-latents shown with the base latents they group

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


REGISTRY: dict[str, type] = {
    "paulo_fig1_matched_cosines": SeedRunParams,
    "paulo_fig2_similarity_vs_frequency": SeedRunParams,
    "paulo_figA1_power_law_offset": PowerLawParams,
    "paulo_figA2_threshold_rules": ThresholdSweepParams,
    "paulo_figA3_hungarian_vs_max": SeedRunParams,
    "paulo_fig5_overlap_vs_size_k_tokens": SweepParams,
    "paulo_figA4_mean_cosines_vs_size_k_tokens": SweepParams,
    "paulo_fig4_overlap_vs_layer_position_arch": LayerArchParams,
    "heap_metrics_vs_layer": VariantSweepParams,
    "heap_token_entropy": VariantSweepParams,
    "heap_toy_models": ToyParams,
    "autointerp_calibration": InterpCalibrationParams,
    "heap_figB_autointerp_roc": VariantInterpParams,
    "paulo_fig3_interp_vs_sharing": SeedInterpParams,
    "paulo_table1_unpaired_explanations": SeedInterpParams,
    "leask_novel_fraction": StitchParams,
    "leask_stitching": StitchParams,
    "leask_meta_sae": StitchParams,
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


def _type_ok(value: Any, tp: Any) -> Any:
    """Return `value` coerced to type `tp` (int -> float allowed) or raise TypeError."""
    origin = typing.get_origin(tp)
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


def build(stem: str, values: dict[str, Any]) -> Any:
    """Validate a flat mapping of parameter values against the stem's dataclass."""
    cls = params_class(stem)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ParamsError(f"{stem}: unknown parameter(s) {unknown}; valid: {names}")
    missing = [n for n in names if n not in values]
    if missing:
        raise ParamsError(f"{stem}: missing parameter(s) {missing}")
    coerced = {}
    for n in names:
        try:
            coerced[n] = _type_ok(values[n], hints[n])
        except TypeError as err:
            raise ParamsError(f"{stem}: parameter {n}={values[n]!r}: {err}") from None
    if coerced["profile"] not in PROFILES:
        raise ParamsError(f"{stem}: profile={coerced['profile']!r}; valid: {list(PROFILES)}")
    obj = cls(**coerced)
    obj.check()
    return obj


def read_profiles(stem: str, params_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    path = (params_dir or PARAMS_DIR) / f"{stem}.yaml"
    if not path.exists():
        raise ParamsError(f"no parameter file {path}")
    data = yaml.safe_load(path.read_text()) or {}
    bad = sorted(set(data) - set(PROFILES))
    if bad:
        raise ParamsError(f"{path.name}: unknown profile(s) {bad}; valid: {list(PROFILES)}")
    if "default" not in data:
        raise ParamsError(f"{path.name}: needs a `default` profile giving every parameter")
    return data


def profile_values(stem: str, profile: str, params_dir: Path | None = None) -> dict[str, Any]:
    """Flat parameter values of one profile: `default` overlaid with its base profile's keys
    (`BASE_PROFILE`: paper-mini's is `paper`), then with the profile's own keys."""
    data = read_profiles(stem, params_dir)
    if profile not in data:
        raise ParamsError(f"{stem}: unknown profile {profile!r}; this file has {sorted(data)}")
    values = dict(data["default"])
    if profile in BASE_PROFILE:
        values.update(data.get(BASE_PROFILE[profile]) or {})
    values.update(data[profile] or {})
    values["profile"] = profile
    return values


def load(stem: str, profile: str = "default", params_dir: Path | None = None, **overrides: Any) -> Any:
    """Typed parameters of `stem` under `profile`, with keyword overrides applied last."""
    values = profile_values(stem, profile, params_dir)
    values.update(overrides)
    return build(stem, values)


def from_namespace(stem: str, namespace: dict[str, Any]) -> Any:
    """Collect a notebook's parameter variables (its globals) and validate them."""
    names = [f.name for f in dataclasses.fields(params_class(stem))]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ParamsError(f"{stem}: the parameters cell does not define {missing}")
    return build(stem, {n: namespace[n] for n in names})


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m saesanity.params <stem> <profile>", file=sys.stderr)
        return 2
    stem, profile = argv
    values = profile_values(stem, profile)
    build(stem, values)  # fail here, before papermill starts, on a bad file
    yaml.safe_dump(values, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
