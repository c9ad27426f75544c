"""The cached pipeline steps a notebook's parameters describe: activations -> SAEs of several seeds.

Every step goes through `cache.cached`, so notebooks sharing (model, variant, corpus, hookpoint,
tokens, SAE config) share artifacts: the seed SAEs of one configuration are trained once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import io
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import distributed
from . import metrics as M
from .activations import ActivationSpec, artifact_dirs, collect, key_fields
from .corpus import token_sequences
from . import params
from .models import load_model
from .cache import artifact_path, cached, cached_json, cached_many, digest, is_valid, key_of, read_meta
from .matching import (Match, masks_from_pairs, match_pair, pair_matchings, pair_shared_spread, standard_rules,
                       summarize)
from .metrics import Pooled
from .nulls import NullData
from .sae import SAEBase, TrainConfig, load_sae, save_saelens
from .sae.train import MemmapSource, batch_order, make_sae, train_families, train_family

_SAE_VERSION = 2  # 2: the faster TopK step and fused Adam (same definitions, other float rounding)
_MATCH_VERSION = 1


# What the pipeline steps of this module read from their parameters `P`: one model variant, one hookpoint, SAE seeds
# and how the SAEs train. A notebook's `params.SeedRunParams` (and its subclasses) is one; so is `RunView`. Every
# field is documented once, on `params.RunFields` and the groups it composes.
RunParams = params.RunFields


@dataclass(frozen=True, kw_only=True)
class RunView(params.RunFields):
    """A `RunParams` of one model variant and hookpoint, built from a sweep's or a report's settings (`of`);
    `hookpoint=None` is a report's whole-model view."""

    hookpoint: str | None

    @classmethod
    def of(cls, S, *, variant: str, hookpoint: str | None, seeds: list[int], **changes) -> "RunView":
        """The view of settings `S` (any object with the fields above, e.g. `params.VariantSweepParams`) for
        `variant` at `hookpoint` with SAE seeds `seeds`; `changes` override any other field."""
        names = [f.name for f in dataclasses.fields(cls)]
        given = {n: getattr(S, n) for n in names if hasattr(S, n)}
        return cls(**{**given, "variant": variant, "hookpoint": hookpoint, "seeds": list(seeds), **changes})


@dataclass
class TrainedSAE:
    sae: SAEBase
    cfg: TrainConfig
    path: Path  # SAELens folder
    log: list[dict]
    info: dict  # training wall time and throughput


def activation_spec(P: RunParams, split: str = "train") -> ActivationSpec:
    n = P.n_tokens if split == "train" else P.n_eval_tokens
    return ActivationSpec(model=P.model, variant=P.variant, corpus=P.corpus, n_tokens=n, seq_len=P.seq_len,
                          seed=P.data_seed, split=split, model_dtype=P.model_dtype,
                          noise_batch=P.model_batch_size if P.variant == "control" else 0,
                          store_dtype=getattr(P, "acts_dtype", "float32"))


def train_cfg(P: RunParams, seed: int) -> TrainConfig:
    """P's SAE config at `seed`. `P.sae_autocast` ("none" | "bf16", "none" where P has no such parameter) runs
    our trainer's forward under bf16 autocast (`sae.train`); sparsify (P.trainer) keeps its own precision.
    `P.lr_schedule` ("constant" where P has none) is our trainer's (`sae.train.lr_at`)."""
    return TrainConfig(d_sae=P.d_sae, k=P.k, batch_size=P.batch_size, lr=P.lr, seed=seed, data_seed=P.data_seed,
                       n_tokens=P.n_tokens * getattr(P, "epochs", 1), auxk_alpha=P.auxk_alpha,
                       autocast=getattr(P, "sae_autocast", "none"), lr_schedule=getattr(P, "lr_schedule", "constant"))


@dataclass(frozen=True)
class Streamed:
    """Training activations that are never cached: the model's forward pass feeds the SAEs through a
    chunked shuffle buffer (`stream.ModelSource`), so disk use does not grow with the training tokens.

    It stands where a cached activation array stands in this module (`acts`, with `acts_dir=None`).
    SAEs trained on it are keyed by `key()`: what determines the activations and their order (not
    the token count — a shorter run's batches are a prefix of a longer one's).
    """

    spec: ActivationSpec  # the train split; n_tokens = the activation rows P asks for
    hookpoint: str
    model_batch_size: int  # sequences per forward pass (in the key: bf16 activations and control noise depend on it)
    buffer_tokens: int  # rows in the shuffle buffer (rounded down to whole batches)
    device: str

    @property
    def shape(self) -> tuple[int, None]:
        return (self.spec.n_seqs() * (self.spec.seq_len - self.spec.drop_first), None)

    def key(self) -> dict:
        fields = {k: v for k, v in key_fields(self.spec).items() if k not in ("n_tokens", "noise_batch")}
        return {**fields, "hookpoint": self.hookpoint, "model_batch_size": self.model_batch_size,
                "buffer_tokens": self.buffer_tokens}

    def rows(self, n_seqs: int, device: str):
        """The model (loaded once per process, `_stream_model`) and up to `n_seqs` of its training token rows
        (tokenized by rank 0 first, then read by the others)."""
        spec = self.spec
        lm = _stream_model(spec.model, spec.variant, spec.variant_seed, device, spec.model_dtype)
        tokens = distributed.rank0_first(lambda: token_sequences(
            spec.corpus, lm.tokenizer, lm.tokenizer_id, spec.seq_len, split="train", seed=spec.seed,
            max_tokens=n_seqs * spec.seq_len, progress=False))
        return lm, tokens[:n_seqs]

    def source(self, cfg: TrainConfig, hookpoints: list[str] | None = None):
        """A `ModelSource` serving `cfg.n_tokens // cfg.batch_size` steps (token rows streamed as needed); with
        `hookpoints`, one source for all of them (`view(h)`; the streams of those hookpoints, this one's otherwise)."""
        from .stream import ModelSource

        spec, steps = self.spec, cfg.n_tokens // cfg.batch_size
        # the chunk size must not depend on the run's length: a shorter run's batches are then a prefix of a
        # longer one's (its snapshots are the shorter runs), at the cost of a whole first chunk's forward
        per_chunk = max(1, self.buffer_tokens // cfg.batch_size)
        rows = -(-steps // per_chunk) * per_chunk * cfg.batch_size
        lm, tokens = self.rows(-(-rows // (spec.seq_len - spec.drop_first)), self.device)
        return ModelSource(lm, tokens, self.hookpoint if hookpoints is None else hookpoints,
                           batch_size=cfg.batch_size, batches_per_chunk=per_chunk,
                           n_steps=steps, model_batch_size=self.model_batch_size, drop_first=spec.drop_first,
                           seed=cfg.data_seed, device=self.device)


@dataclass(frozen=True)
class SparsifyRun:
    """Training by EleutherAI's sparsify (`sae.sparsify_trainer`, the papers' own engine) for the TopK SAEs
    of a family; it stands where `Streamed` stands (`acts`, with `acts_dir=None`) when P.trainer is
    "sparsify". sparsify runs its own forward pass over the token rows `stream.spec` names (every position,
    in row order, whole global batches of the recipe) at `stream.hookpoint`. From the profile a TopK SAE
    takes its latents (`d_sae`), k, training tokens (`n_tokens`), seed and the rows' length (`seq_len` is
    the recipe's ctx_len); everything else (optimizer, lr schedule, batch in sequences, AuxK, clipping) is
    the recipe's, with `overrides`. Other architectures, which sparsify lacks, train with our trainer on
    `stream` (the model forward over the same rows).

    Each SAE is keyed by `sae_key(cfg)`: the rows, the hookpoint, the resolved recipe, n_tokens, the seed
    and sparsify's version. A seed trained alongside others is bitwise the SAE trained alone (sparsify
    draws each initialisation under its own `manual_seed`; one Adam with a parameter group per SAE is
    elementwise; tests/test_runs_sparsify.py checks it), so the seeds of one (d_sae, k, n_tokens) train in one run.
    """

    stream: Streamed
    recipe: str  # a name in sparsify_trainer.RECIPES
    overrides: tuple[tuple[str, object], ...] = ()  # recipe fields changed (sorted items)

    @property
    def shape(self) -> tuple[int, None]:
        return self.stream.shape

    def resolved(self, cfg: TrainConfig):
        """The recipe `cfg` trains with: the named recipe, `overrides`, then cfg's latents and k and seq_len."""
        from .sae.sparsify_trainer import get_recipe

        return get_recipe(self.recipe).overridden(**dict(self.overrides), num_latents=cfg.d_sae, k=cfg.k,
                                                  ctx_len=self.stream.spec.seq_len)

    def key(self) -> dict:
        """What every SAE of this run shares: the token rows, the hookpoint and the recipe's name and overrides."""
        fields = {k: v for k, v in key_fields(self.stream.spec).items()
                  if k not in ("n_tokens", "drop_first", "noise_batch")}
        return {"trainer": "sparsify", "rows": fields, "hookpoint": self.stream.hookpoint, "recipe": self.recipe,
                "overrides": dict(self.overrides)}

    def sae_key(self, cfg: TrainConfig) -> dict:
        from sparsify import __version__ as version

        recipe = {k: v for k, v in dataclasses.asdict(self.resolved(cfg)).items()
                  if k not in ("name", "source", "save_every")}  # save_every: resuming is bitwise (tested)
        return {"trainer": "sparsify", "sparsify_version": version, "rows": self.key()["rows"],
                "hookpoint": self.stream.hookpoint, "recipe": recipe, "n_tokens": cfg.n_tokens, "seed": cfg.seed}

    def train(self, cfgs: list[TrainConfig], out: Path, device: str,
              hookpoints: list[str] | None = None) -> dict[tuple[str, int], Path]:
        """Train the seeds of `cfgs` (one d_sae, k and n_tokens) at `hookpoints` (default: this run's) in one
        sparsify run in `out` (resumed if it holds one) — one forward pass feeds every hookpoint's SAEs —:
        {(hookpoint, seed): SAE folder}. Under torchrun every rank calls this with the same arguments."""
        from .sae.sparsify_trainer import SparsifyError, train_sparsify

        c, hookpoints = cfgs[0], hookpoints or [self.stream.hookpoint]
        spec, recipe = self.stream.spec, self.resolved(c)
        n_rows = c.n_tokens // spec.seq_len
        if n_rows < recipe.batch_size:
            raise SparsifyError(f"n_tokens={c.n_tokens:,} is {n_rows} rows of {spec.seq_len} tokens, less than one "
                                f"sparsify batch of {recipe.batch_size} sequences (recipe {recipe.name})")
        lm, tokens = self.stream.rows(n_rows, device)
        if tokens.shape[0] < n_rows:
            raise SparsifyError(f"corpus {spec.corpus!r} has {tokens.shape[0]:,} training rows of {spec.seq_len} "
                                f"tokens; n_tokens={c.n_tokens:,} needs {n_rows:,}")
        printed = io.StringIO()  # sparsify's prints (modules, seeds, lr, Adam class) go to the run's stdout.txt
        with contextlib.redirect_stdout(printed):
            folders = train_sparsify(lm, tokens, hookpoints, sorted({x.seed for x in cfgs}), out,
                                     recipe=recipe, resume=(out / "state.pt").exists(),
                                     meta={"corpus": spec.corpus, "data_seed": spec.seed, "n_tokens": c.n_tokens})
        if distributed.world()[0] == 0:
            with open(out / "stdout.txt", "a") as f:
                f.write(printed.getvalue())
        return {(h, seed): path for h, by_seed in folders.items() for seed, path in by_seed.items()}


# what SAEs train on: cached activations, the model's forward, or sparsify's own run
TrainData = np.ndarray | Streamed | SparsifyRun | NullData

_MODELS: dict[tuple, object] = {}


def _stream_model(model: str, variant: str, seed: int, device: str, dtype: str):
    """One loaded model per (spec, variant, seed, device, dtype) in this process, for every streamed family."""
    key = (model, variant, seed, device, dtype)
    if key not in _MODELS:
        _MODELS.clear()  # hold one model at a time
        _MODELS[key] = load_model(model, variant, seed, device, dtype)
    return _MODELS[key]


def _data_ref(acts, acts_dir: Path | None) -> dict:
    """What SAEs trained on this data are keyed on: the activation artifact, or the stream that replaces it."""
    if isinstance(acts, NullData):
        return {"null": acts.key()}
    return {"stream": acts.key()} if isinstance(acts, Streamed) else {"acts": acts_dir.name}


def _sae_fields(ref: dict, cfg: TrainConfig) -> dict:
    return {**ref, "cfg": cfg.key()}


def sparsify_trains(cfg: TrainConfig) -> bool:
    """Whether sparsify (P.trainer == "sparsify") would train `cfg`: a TopK SAE with every weight trained. Ours
    trains the rest — the other architectures and the frozen-weight baselines, which sparsify has no way to
    freeze."""
    return cfg.architecture == "topk" and cfg.freeze == "none"


def _by_sparsify(acts, cfg: TrainConfig) -> bool:
    """Whether sparsify trains `cfg` on `acts` (a `SparsifyRun` trains the TopK SAEs; ours trains the rest)."""
    return isinstance(acts, SparsifyRun) and sparsify_trains(cfg)


def _fields(acts, acts_dir: Path | None, cfg: TrainConfig) -> dict:
    """The cache key of the SAE `cfg` trained on `acts` (an activation array, `Streamed` or `SparsifyRun`)."""
    if _by_sparsify(acts, cfg):
        return acts.sae_key(cfg)
    if isinstance(acts, SparsifyRun):
        acts = acts.stream
    return _sae_fields(_data_ref(acts, acts_dir), cfg)


def is_trained(acts_dir, cfg: TrainConfig, acts=None) -> bool:
    """Whether the SAE for (activation artifact — or `acts` when it is `Streamed` / `SparsifyRun` —, config) is
    cached and valid."""
    path = artifact_path("sae", _fields(acts, acts_dir, cfg), _SAE_VERSION)
    return is_valid(path)


def train_cached(acts: TrainData, acts_dir: Path | None, cfg: TrainConfig, *, progress: bool = True,
                 metadata: dict | None = None, device: str = "cpu", snapshots: tuple[int, ...] = ()) -> TrainedSAE:
    """Train (or load) the SAE for (activation artifact, config); resumes from a checkpoint if killed.

    `snapshots`: shorter training lengths (tokens) whose SAEs this run also publishes to the cache, as
    the runs `replace(cfg, n_tokens=n)` would (`train_family` explains why they are the same SAEs).
    """
    (t,) = train_family_cached(acts, acts_dir, [cfg], progress=progress, metadata=metadata, device=device,
                               snapshots=[snapshots])
    return t


def train_family_cached(acts: TrainData, acts_dir: Path | None, cfgs: list[TrainConfig], *, progress: bool = True,
                        metadata: dict | None = None, device: str = "cpu",
                        snapshots: list[tuple[int, ...]] | None = None) -> list[TrainedSAE]:
    """Train (or load) the SAEs `cfgs` on one activation artifact: the missing ones in one pass over the
    data (`train_family`), grouped by (data_seed, batch_size) so each group shares its batches (and by
    n_tokens under torchrun, where a family trains for one length).

    Each SAE is the same artifact, bit for bit, that `train_cached` of its config alone makes.
    """
    snapshots = snapshots or [()] * len(cfgs)
    if len(set(cfgs)) != len(cfgs):
        raise ValueError(f"train_family_cached got a config twice: {cfgs}")
    groups: dict[tuple, list[int]] = {}
    data_parallel = distributed.world()[1] > 1  # where every member of a family trains for the same length
    for i, c in enumerate(cfgs):
        if _by_sparsify(acts, c):  # one sparsify run per (d_sae, k, n_tokens): its seeds
            groups.setdefault(("sparsify", c.d_sae, c.k, c.n_tokens), []).append(i)
        else:
            groups.setdefault((c.data_seed, c.batch_size) + ((c.n_tokens,) if data_parallel else ()), []).append(i)
    out: list[TrainedSAE | None] = [None] * len(cfgs)
    for group, idx in groups.items():
        if group[0] == "sparsify":
            if any(snapshots[i] for i in idx):
                raise ValueError("sparsify runs publish no snapshots (its learning rate decays to 0 at the end)")
            paths = _train_sparsify_group([(acts, cfgs[i]) for i in idx], [metadata] * len(idx), device)
        else:
            paths = _train_group(acts.stream if isinstance(acts, SparsifyRun) else acts, acts_dir,
                                 [cfgs[i] for i in idx], [snapshots[i] for i in idx], progress, metadata, device)
        for i, path in zip(idx, paths):
            out[i] = _loaded(path, cfgs[i])
    return out


def _publish_sae(c: TrainConfig, work: Path, sae, log: list[dict], secs: float, metadata: dict | None) -> dict:
    save_saelens(sae, work, {**(metadata or {}), "train_cfg": dataclasses.asdict(c)})
    (work / "training_log.json").write_text(json.dumps(log))
    steps = c.n_tokens // c.batch_size
    return {"seconds": secs, "tokens_per_s": steps * c.batch_size / secs}


def _publish_family(members: list[tuple[TrainConfig, dict | None]], works: list[Path], results, t0: float) -> list[dict]:
    """Write each trained (SAE, log) of `results` into its work folder (`_publish_sae`, with the (config,
    metadata) of `members`), timed from `t0`, and drop the family's checkpoints."""
    secs = time.perf_counter() - t0
    infos = [_publish_sae(c, w, sae, log, secs, meta) for (c, meta), w, (sae, log) in zip(members, works, results)]
    for w in works:
        for f in w.glob("checkpoint*.pt"):
            f.unlink()
    return infos


def _family_source(acts, longest: TrainConfig):
    """The batch source of a family whose longest member is `longest` (shorter members read a prefix)."""
    if isinstance(acts, (Streamed, NullData)):
        return acts.source(longest)
    return MemmapSource(acts, batch_order(acts.shape[0], longest))


def _train_group(acts, acts_dir: Path | None, cfgs: list[TrainConfig], snapshots: list[tuple[int, ...]],
                 progress: bool, metadata: dict | None, device: str) -> list[Path]:
    ref = _data_ref(acts, acts_dir)
    t0 = time.perf_counter()

    def train(missing: list[int], works: list[Path]):
        sub = [cfgs[i] for i in missing]

        def snap(c: TrainConfig, n: int):
            short = dataclasses.replace(c, n_tokens=n)

            def save(sae, log):
                secs = time.perf_counter() - t0
                cached("sae", _sae_fields(ref, short),
                       lambda w: _publish_sae(short, w, copy.deepcopy(sae).cpu(), log, secs, metadata),
                       version=_SAE_VERSION)
            return save

        longest = max(sub, key=lambda c: c.n_tokens)  # shorter members' orders are prefixes of its order
        # the family's checkpoint lives in its first member's work folder, named by the whole family
        ckpt = works[0] / f"checkpoint-{key_of('family', {'members': [_sae_fields(ref, c) for c in sub]})}.pt"
        return train_family(_family_source(acts, longest), sub, checkpoint=ckpt, progress=progress, device=device,
                            snapshots=[{n: snap(c, n) for n in snapshots[i]} for c, i in zip(sub, missing)],
                            desc=f"SAE seed {sub[0].seed}" if len(sub) == 1 else
                            f"{len(sub)} SAEs (seeds {sorted({c.seed for c in sub})})")

    def compute(missing: list[int], works: list[Path]) -> list[dict]:
        return _publish_family([(cfgs[i], metadata) for i in missing], works, train(missing, works), t0)

    return _cached_family([_sae_fields(ref, c) for c in cfgs], compute, train)


def _train_sparsify_group(items: list[tuple[SparsifyRun, TrainConfig]], metadata: list[dict | None],
                          device: str) -> list[Path]:
    """The TopK SAEs of `items` — (run, config) pairs of one d_sae, k and n_tokens, at one or more hookpoints
    of the same rows and recipe — by sparsify: the missing ones in one run over their hookpoints and seeds
    (one forward pass), whose folder (resumable) lives in the first missing member's work folder. Each SAE's
    artifact holds sparsify's own files (read by `load_sae`), its training log, the run's manifest and
    sparsify's printed lines."""
    from .sae.sparsify_trainer import LOG, MANIFEST

    shared = {json.dumps({**run.key(), "hookpoint": None}, sort_keys=True, default=str) for run, _ in items}
    if len(shared) > 1 or len({(c.d_sae, c.k, c.n_tokens) for _, c in items}) > 1:
        raise ValueError("one sparsify run trains SAEs of one size, k and length on the same rows and recipe")
    t0 = time.perf_counter()

    def train(missing: list[int], works: list[Path]) -> dict[tuple[str, int], Path]:
        run = items[missing[0]][0]
        hooks = list(dict.fromkeys(items[i][0].stream.hookpoint for i in missing))
        return run.train([items[i][1] for i in missing], works[0] / "sparsify-run", device, hooks)

    def compute(missing: list[int], works: list[Path]) -> list[dict]:
        folders = train(missing, works)
        secs = time.perf_counter() - t0
        run_dir = works[0] / "sparsify-run"
        manifest = json.loads((run_dir / MANIFEST).read_text())
        infos = []
        for i, w in zip(missing, works):
            run, c = items[i]
            for f in folders[run.stream.hookpoint, c.seed].iterdir():
                shutil.copy2(f, w / f.name)
            (w / "sparsify_run.json").write_text(json.dumps({**manifest, "saesanity": metadata[i] or {}}, indent=1))
            shutil.copy2(run_dir / "stdout.txt", w / "sparsify_stdout.txt")
            if not (w / LOG).exists():
                (w / LOG).write_text("[]")
            infos.append({"seconds": secs, "tokens_per_s": manifest["tokens_trained"] / secs, "trainer": "sparsify",
                          "recipe": manifest["recipe"]["name"], "steps": manifest["steps"],
                          "tokens_trained": manifest["tokens_trained"], "optimizer": manifest["optimizer_class"],
                          "world_size": manifest["world_size"], "hookpoints_in_run": list(manifest["hookpoints"])})
        shutil.rmtree(run_dir)
        return infos

    return _cached_family([run.sae_key(c) for run, c in items], compute, train)


def train_sparsify_hookpoints(runs: dict[str, SparsifyRun], cfgs: dict[str, list[TrainConfig]], *,
                              metadata: dict[str, dict] | None = None,
                              device: str = "cpu") -> dict[str, list[TrainedSAE]]:
    """The sparsify TopK SAEs `cfgs[h]` at every hookpoint h of `runs` (one model's rows): the missing ones
    trained in one sparsify run per (d_sae, k, n_tokens) over all hookpoints that miss one — one forward pass
    for every layer — each SAE cached under the key a single-hookpoint run gives it (`train_family_cached`
    finds it). {h: TrainedSAE per config, in order}."""
    groups: dict[tuple[int, int, int], list[tuple[str, int]]] = {}
    for h, cs in cfgs.items():
        for j, c in enumerate(cs):
            if c.architecture != "topk":
                raise ValueError(f"train_sparsify_hookpoints trains TopK SAEs (sparsify); got {c.architecture}")
            groups.setdefault((c.d_sae, c.k, c.n_tokens), []).append((h, j))
    out: dict[str, list] = {h: [None] * len(cs) for h, cs in cfgs.items()}
    for members in groups.values():
        paths = _train_sparsify_group([(runs[h], cfgs[h][j]) for h, j in members],
                                      [(metadata or {}).get(h) for h, _ in members], device)
        for (h, j), path in zip(members, paths):
            out[h][j] = _loaded(path, cfgs[h][j])
    return out


def prefill_sparsify(P: RunParams, train: dict[str, tuple], cfgs: dict[str, list[TrainConfig]]) -> None:
    """With `P.trainer == "sparsify"`: train the missing TopK SAEs among `cfgs` ({hookpoint: configs}) at the
    hookpoints of `train` (`data_for(P, "train", …, hookpoints)`) together, one sparsify run per (d_sae, k,
    n_tokens) over all of them (`train_sparsify_hookpoints`), so that the per-hookpoint calls which follow find
    them cached. With our trainer it does nothing."""
    if getattr(P, "trainer", "ours") != "sparsify":
        return
    topk = {h: [c for c in cs if sparsify_trains(c)] for h, cs in cfgs.items()}
    topk = {h: cs for h, cs in topk.items() if cs}
    if topk:
        train_sparsify_hookpoints({h: train[h][0] for h in topk}, topk,
                                  metadata={h: _meta(P, h) for h in topk}, device=_device(P))


def _loaded(path: Path, cfg: TrainConfig) -> TrainedSAE:
    return TrainedSAE(sae=load_sae(path), cfg=cfg, path=path, log=json.loads((path / "training_log.json").read_text()),
                      info=read_meta(path)["info"])


def _cached_family(fields: list[dict], compute, train) -> list[Path]:
    """`cached_many` of a family's SAEs (resumable work folders). Under torchrun every rank trains the missing
    members together — rank 0 in `compute` (train, then write the artifacts), the others in `train` with
    rank 0's work folders as the paths they name (checkpoints, runs) — and rank 0 alone publishes."""
    rank, world = distributed.world()
    if world == 1:
        return cached_many("sae", fields, compute, version=_SAE_VERSION, resumable=True)
    finals = [artifact_path("sae", f, _SAE_VERSION) for f in fields]
    missing = [i for i, f in enumerate(finals) if not is_valid(f)]
    distributed.barrier()  # every rank has looked before rank 0 publishes anything
    if rank == 0:
        paths = cached_many("sae", fields, compute, version=_SAE_VERSION, resumable=True)
    else:
        if missing:
            train(missing, [finals[i].with_name(f"{finals[i].name}.partial") for i in missing])
        paths = finals
    distributed.barrier()
    return paths


def train_hookpoints(P: RunParams, cfgs: dict[str, list[TrainConfig]], *, progress: bool = True,
                     snapshots: bool = False) -> dict[str, list[TrainedSAE]]:
    """hookpoint h -> the SAEs `cfgs[h]` trained (or loaded) on P's training data at h.

    When that data is streamed (`Streamed`; beside sparsify, for the architectures sparsify does not train),
    every hookpoint's missing SAEs train in one pass (`_train_streamed_hookpoints`); the TopK SAEs sparsify
    trains (P.trainer), in one sparsify run per size over every hookpoint (`prefill_sparsify`); on cached
    activation arrays, hookpoint by hookpoint as `train_family_cached` trains them. `snapshots`: each SAE also
    publishes the shorter runs `convergence` compares, where they come free (`snapshot_lengths`).
    """
    train = data_for(P, "train", progress, list(cfgs))
    _train_hookpoints_together(P, train, cfgs, progress)
    return {h: train_many(P, *train[h], cfgs[h], progress, hookpoint=h,
                          snapshots=snapshot_lengths(P, train[h][0]) if snapshots else ()) for h in cfgs}


def _train_hookpoints_together(P: RunParams, train: dict[str, tuple], cfgs: dict[str, list[TrainConfig]],
                               progress: bool) -> None:
    """Train the missing SAEs `cfgs[h]` of every hookpoint h of `train` together: sparsify's TopK ones in one run
    per size (`prefill_sparsify`), ours on streamed data in one pass (`_train_streamed_hookpoints`); SAEs on
    cached arrays are left to the per-hookpoint calls that follow."""
    prefill_sparsify(P, train, cfgs)
    _train_streamed_hookpoints(P, train, cfgs, progress)


def _train_streamed_hookpoints(P: RunParams, train: dict[str, tuple], cfgs: dict[str, list[TrainConfig]], progress: bool) -> None:
    """Train (not load) the missing SAEs `cfgs[h]` that our trainer trains from P's streamed training data, at
    every hookpoint h in one pass: one model forward per chunk computes every hookpoint's activations
    (`stream.ModelSource` over all of them, `train_families` over its views) and each SAE steps on its own
    hookpoint's batch — bitwise the SAE a pass at its hookpoint alone trains. Each is keyed as
    `train_family_cached` keys it (its hookpoint's `Streamed.key()` and its config), so an SAE trained here is
    found by a single-hookpoint lookup and vice versa. `train` is `data_for(P, "train", …, hookpoints)`. Nothing
    happens for cached arrays or sparsify's TopK SAEs (`prefill_sparsify` trains those together).
    """
    together = [(_stream_of(train[h][0], c), c) for h in cfgs for c in cfgs[h] if _stream_of(train[h][0], c)]
    if together:
        _train_streams_together(list(dict.fromkeys(together)), {h: _meta(P, h) for h in cfgs}, progress, _device(P))


def _stream_of(acts: TrainData, cfg: TrainConfig) -> Streamed | None:
    """The stream our trainer trains `cfg` on from `acts`, or None (a cached array, or a TopK SAE of sparsify's)."""
    if isinstance(acts, SparsifyRun) and not _by_sparsify(acts, cfg):
        return acts.stream
    return acts if isinstance(acts, Streamed) else None


def _train_streams_together(items: list[tuple[Streamed, TrainConfig]], metadata: dict[str, dict], progress: bool,
                            device: str) -> list[Path]:
    """The SAEs of (stream, config) `items`, streams differing only in their hookpoint: the missing ones in one
    pass per (stream settings, data_seed, batch_size) — and n_tokens under torchrun — as `_train_group` groups
    one hookpoint's family; rank 0 publishes, every rank trains (`_cached_family`). `metadata[h]`: the SAELens
    metadata of hookpoint h's SAEs."""
    data_parallel = distributed.world()[1] > 1
    groups: dict[tuple, list[int]] = {}
    for i, (stream, c) in enumerate(items):
        key = (dataclasses.replace(stream, hookpoint=""), c.data_seed, c.batch_size)
        groups.setdefault(key + ((c.n_tokens,) if data_parallel else ()), []).append(i)
    paths: list[Path | None] = [None] * len(items)
    for idx in groups.values():
        group = [items[i] for i in idx]
        fields = [_sae_fields(_data_ref(stream, None), c) for stream, c in group]
        t0 = time.perf_counter()

        def train(missing: list[int], works: list[Path], group=group, fields=fields):
            hps = list(dict.fromkeys(group[i][0].hookpoint for i in missing))
            fams = [[i for i in missing if group[i][0].hookpoint == h] for h in hps]
            order = [i for fam in fams for i in fam]
            longest = max((group[i][1] for i in missing), key=lambda c: c.n_tokens)  # shorter ones read a prefix
            source = group[missing[0]][0].source(longest, hookpoints=hps)
            ckpt = works[0] / f"checkpoint-{key_of('family', {'members': [fields[i] for i in order]})}.pt"
            res = train_families([(source.view(h), [group[i][1] for i in fam]) for h, fam in zip(hps, fams)],
                                 checkpoint=ckpt, progress=progress, device=device,
                                 desc=f"{len(missing)} SAEs at {len(hps)} hookpoints")
            by_member = dict(zip(order, (m for fam in res for m in fam)))
            return [by_member[i] for i in missing]

        def compute(missing: list[int], works: list[Path], group=group, t0=t0, train=train) -> list[dict]:
            return _publish_family([(group[i][1], metadata[group[i][0].hookpoint]) for i in missing], works,
                                   train(missing, works), t0)

        for i, path in zip(idx, _cached_family(fields, compute, train)):
            paths[i] = path
    return paths


def data_for(P: RunParams, split: str, progress: bool, hookpoints: list[str] | None = None):
    """P's activations of one split (collected once, cached) and the artifact folder they live in.

    With `hookpoints`, a dict hookpoint -> (array, folder) for all of them, missing ones collected in
    one forward pass; otherwise the pair for `P.hookpoint`. When P streams its training activations
    (`P.activations == "streamed"`), the train split is a `Streamed` in place of each array, with no folder;
    when sparsify trains P's TopK SAEs (`P.trainer == "sparsify"`) it is a `SparsifyRun` around that stream
    (streamed whatever `P.activations` says: sparsify needs no activation cache, nor do the other
    architectures trained beside it).
    """
    names = hookpoints or [P.hookpoint]
    spec = activation_spec(P, split)
    sparsify = split == "train" and getattr(P, "trainer", "ours") == "sparsify"
    if sparsify or (split == "train" and getattr(P, "activations", "cached") == "streamed"):
        out = {h: (Streamed(spec, h, P.model_batch_size, P.stream_buffer_tokens, P.device), None) for h in names}
        if sparsify:
            overrides = tuple(sorted(P.sparsify_overrides.items()))
            out = {h: (SparsifyRun(a, P.sparsify_recipe, overrides), None) for h, (a, _) in out.items()}
    else:
        acts = distributed.rank0_first(lambda: collect(spec, names, batch_size=P.model_batch_size,
                                                       device=_device(P), progress=progress))
        out = {h: (acts[h], d) for h, d in zip(names, artifact_dirs(spec, names))}
    return out if hookpoints else out[P.hookpoint]


def _device(P: RunParams) -> str:
    """P.device, or this rank's GPU under torchrun (`distributed.init`)."""
    return distributed.init(P.device)[2]


def _meta(P: RunParams, hookpoint: str | None) -> dict:
    return {"model": P.model, "variant": P.variant, "hook_name": hookpoint or P.hookpoint, "corpus": P.corpus}


def train_one(P: RunParams, acts: TrainData, acts_dir: Path | None, cfg: TrainConfig, progress: bool,
           snapshots: tuple[int, ...] = (), hookpoint: str | None = None) -> TrainedSAE:
    return train_cached(acts, acts_dir, cfg, progress=progress, metadata=_meta(P, hookpoint), device=_device(P),
                        snapshots=snapshots)


def train_many(P: RunParams, acts: TrainData, acts_dir: Path | None, cfgs: list[TrainConfig], progress: bool,
                hookpoint: str | None = None, snapshots: tuple[int, ...] = ()) -> list[TrainedSAE]:
    """The SAEs `cfgs` on one activation artifact, the missing ones trained together in one pass, each also
    publishing its `snapshots` (shorter lengths; `snapshot_lengths`)."""
    return train_family_cached(acts, acts_dir, cfgs, progress=progress, metadata=_meta(P, hookpoint),
                               device=_device(P), snapshots=[snapshots] * len(cfgs))


def check_lengths(P: RunParams) -> list[int]:
    """The training lengths `convergence` compares: n/4, n/2 and n (n = P.n_tokens x epochs), those of at least
    one batch."""
    n = P.n_tokens * getattr(P, "epochs", 1)
    return [m for m in (n // 4, n // 2, n) if m >= P.batch_size]


def snapshot_lengths(P: RunParams, acts: TrainData) -> tuple[int, ...]:
    """The shorter lengths of `check_lengths` when a run to n publishes them for free as snapshots: our trainer on
    a cached array with a constant rate (a shorter run is then a prefix of the longer one, bitwise). () where it
    is not (sparsify or a decaying rate: each length its own run; streamed data: a shorter run shuffles in
    smaller chunks), so an SAE is trained first without them and `convergence` trains the shorter runs itself."""
    if isinstance(acts, (Streamed, SparsifyRun)) or getattr(P, "lr_schedule", "constant") != "constant":
        return ()
    return tuple(check_lengths(P)[:-1])


def seed_saes(P: RunParams, *, progress: bool = True) -> tuple[list[TrainedSAE], dict]:
    """SAEs of every seed in `P.seeds` on P's activations (all seeds see the same batches)."""
    acts, acts_dir = data_for(P, "train", progress)
    saes = train_many(P, acts, acts_dir, [train_cfg(P, s) for s in P.seeds], progress,
                      snapshots=snapshot_lengths(P, acts))
    info = ({"streamed": acts.key()} if isinstance(acts, Streamed) else {"sparsify": acts.key()}
            if isinstance(acts, SparsifyRun) else read_meta(acts_dir)["info"])
    return saes, {"activations": info, "activation_rows": int(acts.shape[0])}


def seed_pair_floor(P: RunParams, rule: str = "paper", *, progress: bool = True) -> dict | None:
    """The noise floor over training seeds of P's shared fraction under `rule` (a name of
    `matching.standard_rules`, at P.threshold): the shared fraction of every pair of `seed_saes(P)` and its spread
    (`matching.pair_shared_spread`; the Hungarian solves cached, so Fig. 1, Fig. 2, A1 and Fig. 5's base point
    solve each pair once). None with fewer than 3 seeds."""
    if len(P.seeds) < 3:
        return None
    trained = seed_saes(P, progress=progress)[0]
    return pair_shared_spread(masks_from_pairs(pair_matches(trained, progress=progress), len(trained),
                                               standard_rules(P.threshold)[rule]))


def architecture_seed_pairs(P, *, progress: bool = True) -> dict[str, list[TrainedSAE]]:
    """P's seed pair (P.seeds[:2]) of each architecture in `P.architectures` at P's size, k and tokens: TopK's is
    `seed_saes`' (Fig. 1's, from its cache); the others train together in one pass (Matryoshka with
    `P.matryoshka_widths`), by our trainer."""
    out = {}
    if "topk" in P.architectures:
        out["topk"] = seed_saes(P, progress=progress)[0][:2]
    others = [a for a in P.architectures if a != "topk"]
    if others:
        acts, acts_dir = data_for(P, "train", progress)
        cfgs = [dataclasses.replace(train_cfg(P, s), architecture=a,
                                    matryoshka_widths=tuple(P.matryoshka_widths) if a == "matryoshka" else ())
                for a in others for s in P.seeds[:2]]
        trained = train_many(P, acts, acts_dir, cfgs, progress)
        out.update({a: trained[2 * i:2 * i + 2] for i, a in enumerate(others)})
    return out


NULL_ABSOLUTE_MAX = 16384  # above this many latents a null pair's absolute PW-MCC (a dense |cos| Hungarian) is skipped


def pair_stats(P: RunParams, data: TrainData, acts_dir: Path | None, cfgs: list[TrainConfig], held: np.ndarray,
               rule, *, progress: bool = True) -> dict:
    """The seed pair `cfgs` (two configs) trained on `data` (cached): the share of the first's latents it shares
    with the second under `rule` (`matching.shared`), the signed PW-MCC (`consistency.pw_mcc_of`, the same matching)
    and the absolute one (None above `NULL_ABSOLUTE_MAX` latents), the first's FVU and L0 on `held`."""
    from .consistency import pw_mcc, pw_mcc_of
    from .matching import shared

    pair = train_many(P, data, acts_dir, cfgs, progress)
    m = pair_matches(pair, progress=False)[0, 1]
    a, b = pair[0].sae, pair[1].sae
    absolute = pw_mcc(a.W_dec, b.W_dec)["absolute"] if max(a.d_sae, b.d_sae) <= NULL_ABSOLUTE_MAX else None
    ev = evaluate(a, held, device=_device(P))
    return {"shared_frac": float(shared(m, rule).mean()), "pw_mcc_signed": pw_mcc_of(m), "pw_mcc_absolute": absolute,
            "fvu": ev["fvu"], "l0": ev["l0"], "n_tokens": cfgs[0].n_tokens}


def data_nulls(P: RunParams, kinds: list[str], *, progress: bool = True) -> dict[str, tuple[TrainData, Path | None]]:
    """{"real": (P's training data, its folder), kind: (its `nulls.NullData`, None) for each of `kinds`}: the nulls
    of P's training activations — or, where P streams those, of its held-out ones (the only array there is)."""
    acts, acts_dir = data_for(P, "train", progress)
    ref, ref_dir = (acts, acts_dir) if acts_dir is not None else data_for(P, "heldout", progress)
    return {"real": (acts, acts_dir), **{kind: (NullData(kind, ref, ref_dir.name), None) for kind in kinds}}


def pair_cfgs(P: RunParams, n_tokens: int) -> list[TrainConfig]:
    """P's seed pair (P.seeds[:2]) trained for `n_tokens`."""
    return [dataclasses.replace(train_cfg(P, s), n_tokens=n_tokens) for s in P.seeds[:2]]


def data_null_stats(P: RunParams, kinds: list[str], n_tokens: int, rule, *, progress: bool = True) -> dict[str, dict]:
    """{"real" and each data null of `kinds` (`data_nulls`): `pair_stats` of P's seed pair trained for `n_tokens`
    on it} — on the real activations a snapshot of `seed_saes`' pair where n_tokens is one of `check_lengths`.
    Each pair's FVU is on held-out rows of its own data (a null's: `NullData.sample`)."""
    held = heldout_acts(P, progress=progress)
    cfgs = pair_cfgs(P, n_tokens)
    return {name: pair_stats(P, data, d, cfgs, held if name == "real" else data.sample(held.shape[0]), rule,
                             progress=progress) for name, (data, d) in data_nulls(P, kinds, progress=progress).items()}


def pair_at_lengths(P: RunParams, *, progress: bool = True) -> dict[int, list[SAEBase]]:
    """P's seed pair (P.seeds[:2]) before training (0: `make_sae` at each seed, what the trainer starts from) and
    after each of `check_lengths(P)` training tokens (the snapshots `seed_saes` published, or trained here)."""
    lengths = check_lengths(P)
    acts, acts_dir = sweep_train(P, "n_tokens", lengths, progress=progress)
    base = [train_cfg(P, s) for s in P.seeds[:2]]
    out = {m: [t.sae for t in train_many(P, acts, acts_dir, [dataclasses.replace(c, n_tokens=m) for c in base],
                                         progress)] for m in lengths}
    d_in = out[lengths[-1]][0].W_dec.shape[1]
    return {0: [make_sae(c, d_in) for c in base], **out}


_EVAL_VERSION = 1
_EVAL_FUNCTIONS: list = []  # the evaluation functions `_eval_cached` wraps: their source is in the key


@functools.cache
def _eval_code() -> str:
    """Digest of the code an evaluation's numbers come from: `metrics`, the SAE package (encode / decode, the
    top-k kernel) and the wrapped functions with the row readers, so an edit to any of them recomputes."""
    files = sorted(Path(M.__file__).parent.joinpath("sae").glob("*.*")) + [Path(M.__file__)]
    return digest([f.read_text() for f in files if f.suffix in (".py", ".cpp")],
                  [inspect.getsource(f) for f in (*_EVAL_FUNCTIONS, eval_batches, eval_mean, on_device)])


def _sae_digest(sae: SAEBase) -> str:
    """An SAE by what its encode and decode compute from: its class, its scalar settings (k, widths, ...) and
    every tensor of its state (weights and buffers: BatchTopK's threshold, JumpReLU's)."""
    settings = {k: v for k, v in sorted(vars(sae).items()) if not k.startswith("_") and k != "training"
                and isinstance(v, (bool, int, float, str, tuple, list, type(None)))}
    state = sae.state_dict()
    return digest(type(sae).__qualname__, settings, sorted(state), *(state[k] for k in sorted(state)))


def _eval_cached(fn):
    """`fn(sae, acts, ...)` computed once per (SAE, rows, arguments) and kept in the cache (step `eval`): the
    SAE and the rows are keyed by content (`cache.digest`, ≈ 0.1 s for 100K rows of 576 values), with the
    evaluation code, torch's version and thread count, so a result is the one this code would compute here
    now. The same held-out metrics of the same SAE were recomputed by every notebook reading it (Fig. 1's
    pair at three lengths in Fig. 2, A1, A2 and A3, ≈ 2 min each on 2 cores). `fn.__wrapped__` is uncached."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapped(sae, acts, *args, **kwargs):
        bound = sig.bind(sae, acts, *args, **kwargs)
        bound.apply_defaults()
        rest = {k: list(v) if isinstance(v, tuple) else v for k, v in bound.arguments.items()
                if k not in ("sae", "acts")}
        fields = {"fn": fn.__name__, "code": _eval_code(), "sae": _sae_digest(sae), "rows": digest(acts),
                  "args": rest, "torch": torch.__version__, "threads": torch.get_num_threads()}
        return cached_json("eval", fields, lambda: fn(sae, acts, *args, **kwargs), version=_EVAL_VERSION)

    _EVAL_FUNCTIONS.append(fn)
    return wrapped


@contextlib.contextmanager
def on_device(sae: SAEBase, device: str):
    """`sae` moved to `device` for the block, then back where it was."""
    home = next(sae.parameters()).device
    sae.to(device)
    try:
        yield sae
    finally:
        sae.to(home)


def eval_batches(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu"):
    """Rows of `acts` [N, D] in batches on `device`, as `sae` was trained to see them (`transform_input`:
    its reconstruction target); a memmap is read batch by batch, never copied whole."""
    for s in range(0, acts.shape[0], batch):
        yield sae.transform_input(torch.from_numpy(np.array(acts[s:s + batch], dtype=np.float32)).to(device))


def eval_mean(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu") -> torch.Tensor:
    """[1, D] mean of the (transformed) rows, accumulated in float64 over batches."""
    total = torch.zeros(acts.shape[1], dtype=torch.float64, device=device)
    for x in eval_batches(sae, acts, batch, device):
        total += x.double().sum(0)
    return (total / acts.shape[0]).float()[None]


@_eval_cached
@torch.no_grad()
def evaluate_all(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu") -> dict:
    """Every held-out metric of `sae` on `acts` [N, D] in one pass on `device` (`metrics.Pooled`: FVU centred on
    the set's mean, L0, L1, cosine, firing frequencies and dead fraction, the comparison EVs); rows read batch
    by batch as the SAE reconstructs them (`eval_batches`)."""
    with on_device(sae, device):
        pooled = Pooled(eval_mean(sae, acts, batch, device), sae.W_dec.shape[0])
        for x in eval_batches(sae, acts, batch, device):
            z = sae.encode(x)
            pooled.update(x, sae.decode(z), z)
    return pooled.result()


@_eval_cached
@torch.no_grad()
def level_metrics(sae: SAEBase, acts: np.ndarray, widths: tuple[int, ...], batch: int = 8192,
                  device: str = "cpu", noise_shards: int = 0) -> list[dict]:
    """A nested (Matryoshka) SAE's held-out metrics at each level m of `widths` (m_1 < … < F), in one pass: the
    level's reconstruction is the full code's first m latents decoded, x̂_m = z[:, :m] W_dec[:m] + b_dec (what the
    Matryoshka loss asks to reconstruct on its own), scored as `evaluate_all` scores the full one (`metrics.Pooled`:
    FVU centred on the set's mean; L0 = active latents among the first m). At m = F it is `evaluate_all`'s. With
    `noise_shards` >= 2 (and at least 2 rows a shard) each level also carries its noise floor as `recon_metrics`
    does: `fvu_shard_sd` and `l0_shard_sd`, the sd over that many contiguous shards each scored alone (one more
    pass)."""
    widths = tuple(int(w) for w in widths)
    F_ = sae.W_dec.shape[0]
    if not widths or list(widths) != sorted(set(widths)) or widths[0] < 1 or widths[-1] != F_:
        raise ValueError(f"widths={list(widths)}: need strictly increasing levels ending at the SAE's {F_} latents")
    with on_device(sae, device):
        mean = eval_mean(sae, acts, batch, device)
        pooled = [Pooled(mean, m) for m in widths]
        for x in eval_batches(sae, acts, batch, device):
            z = sae.encode(x)
            for m, p in zip(widths, pooled):
                p.update(x, z[:, :m] @ sae.W_dec[:m] + sae.b_dec, z[:, :m])
    out = [{"width": m, "fvu": r["fvu"], "l0": r["l0"]} for m, r in zip(widths, (p.result() for p in pooled))]
    if noise_shards and acts.shape[0] >= 2 * noise_shards:
        per = [level_metrics.__wrapped__(sae, s, widths, batch, device) for s in M.shards(acts, noise_shards)]
        for g, row in enumerate(out):
            for k in ("fvu", "l0"):
                row[f"{k}_shard_sd"] = M.spread(p[g][k] for p in per)["sd"]
    return out


def evaluate(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu",
             noise_shards: int = 0) -> dict[str, float]:
    """FVU (pooled over all rows: Σ‖x−x̂‖² / Σ‖x−x̄‖², x̄ the mean of all rows), mean L0 and n_tokens
    (`evaluate_all`); with `noise_shards` >= 2 also their noise floor over that many held-out shards,
    `fvu_shard_sd` and `l0_shard_sd` (`recon_metrics`, one more pass). Both are cached, so this reads the
    same entry `recon_metrics` / `evaluate_all` would."""
    r = recon_metrics(sae, acts, batch, device, noise_shards) if noise_shards else evaluate_all(sae, acts, batch, device)
    return {k: r[k] for k in ("fvu", "l0", "n_tokens", "fvu_shard_sd", "l0_shard_sd") if k in r}


@_eval_cached
def recon_metrics(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu",
                  noise_shards: int = M.NOISE_SHARDS) -> dict[str, float]:
    """Held-out metrics of `sae` on `acts`, pooled over all rows (the evaluation set's mean centres FVU):
    fvu, l0, l1, cosine, dead_frac, and the SAELens-legacy / SAEBench explained variance — `runs.evaluate_all`
    (one pass, `metrics.Pooled`) without the per-latent frequencies — and their noise floor, `fvu_shard_sd` and
    `l0_shard_sd`: the sd of FVU and L0 over `noise_shards` contiguous shards of the rows (`metrics.shard_spread`;
    one more pass in all; left out for noise_shards = 0 or fewer than 2 rows a shard), and `fvu_shard_values`, the
    shards' FVUs, for a paired test against another metric on the same rows (`metrics.paired_beyond_noise`)."""
    rec = {k: v for k, v in evaluate_all.__wrapped__(sae, acts, batch, device).items() if k != "frequency"}
    if noise_shards and acts.shape[0] >= 2 * noise_shards:
        l0s = []

        def fvu_of(rows):
            m = evaluate_all.__wrapped__(sae, rows, batch, device)
            l0s.append(m["l0"])
            return m["fvu"]
        spread = M.shard_spread(fvu_of, acts, noise_shards)
        rec["fvu_shard_sd"], rec["fvu_shard_values"] = spread["sd"], spread["values"]  # values: for paired tests
        rec["l0_shard_sd"] = float(np.std(l0s, ddof=1))
    return rec


def heldout_metrics(P: RunParams, saes: list[TrainedSAE], *, progress: bool = True) -> list[dict[str, float]]:
    """Each SAE's held-out FVU, L0 and n_tokens (`evaluate`) with their noise floor over held-out shards
    (`fvu_shard_sd`, `l0_shard_sd`: `recon_metrics`)."""
    acts = heldout_acts(P, progress=progress)
    return [evaluate(t.sae, acts, device=P.device, noise_shards=M.NOISE_SHARDS) for t in saes]


def pair_matches(trained: list[TrainedSAE], *, progress: bool = True) -> dict[tuple[int, int], Match]:
    """Matchings between every ordered pair (i, j) of `trained`, each Hungarian pair solved once and cached."""

    def solve(i: int, j: int) -> tuple[Match, Match]:
        def compute(work: Path) -> dict:
            ab, ba = match_pair(trained[i].sae, trained[j].sae)
            np.savez(work / "match.npz", **{f"ab_{k}": v for k, v in vars(ab).items()},
                     **{f"ba_{k}": v for k, v in vars(ba).items()})
            return {}

        path = cached("match", {"a": trained[i].path.name, "b": trained[j].path.name}, compute, version=_MATCH_VERSION)
        with np.load(path / "match.npz") as z:
            return tuple(Match(**{k[3:]: z[k] for k in z.files if k.startswith(pre)}) for pre in ("ab_", "ba_"))

    return pair_matchings(len(trained), solve, progress)


def latent_frequencies(sae: SAEBase, acts: np.ndarray, batch: int = 8192, device: str = "cpu") -> np.ndarray:
    """[F] firing frequency of each latent over `acts` (`metrics.firing_frequency`, pooled over rows; `evaluate_all`)."""
    return evaluate_all(sae, acts, batch, device)["frequency"]


def row_tokens(acts_dir: Path, drop_first: int, n_rows: int) -> np.ndarray:
    """[n_rows] the token id at each activation row of the artifact in `acts_dir`."""
    return np.load(Path(acts_dir) / "tokens.npy")[:, drop_first:].reshape(-1)[:n_rows]


def heldout_acts(P: RunParams, *, progress: bool = True) -> np.ndarray:
    return data_for(P, "heldout", progress)[0]


def sweep(P: RunParams, axis: str, values: list[int], *, progress: bool = True) -> list[dict]:
    """Seed pairs (P.seeds[:2]) trained at each value of one axis — `d_sae`, `k` or `n_tokens` (training
    tokens) — with the others at P's values; each row: the value, `matching.summarize` of the pair, and
    the pair's held-out FVU. SAEs and matchings are cached, so the base point reuses Fig. 1's."""
    acts, acts_dir = sweep_train(P, axis, values, progress=progress)
    held = heldout_acts(P, progress=progress)
    base = [train_cfg(P, s) for s in P.seeds[:2]]
    return [{axis: v, **pair_row(P, acts, acts_dir, [dataclasses.replace(c, **{axis: v}) for c in base],
                                 held, progress)} for v in values]


SWEEP_AXES = {"d_sae": "sizes", "k": "ks", "n_tokens": "train_tokens"}  # axis -> the sweep parameter listing its values


def sweeps(P, *, progress: bool = True) -> dict[str, list[dict]]:
    """Fig. 5 / A4's three sweeps: `sweep(P, axis, values)` along each axis of `SWEEP_AXES`, its values from P
    (`params.SweepParams`: sizes, ks, train_tokens)."""
    return {axis: sweep(P, axis, getattr(P, field), progress=progress) for axis, field in SWEEP_AXES.items()}


def sweep_train(P: RunParams, axis: str, values: list[int], *, progress: bool = True):
    """Train (or load) every SAE of `sweep(P, axis, values)` in one pass over the data: all seeds × values as
    one family; along `n_tokens`, the seeds trained to the longest missing length publish the shorter ones
    as snapshots. With sparsify (P.trainer), TopK SAEs train one run per value, its seeds together, and with our
    trainer under `lr_schedule: linear` every length is a member of the one family: a decaying learning rate
    reaches zero at each run's end, so a shorter run is no prefix of a longer one.
    Returns the training data (`data_for`)."""
    if axis not in ("d_sae", "k", "n_tokens"):
        raise ValueError(f"sweep axis {axis!r}; valid: 'd_sae', 'k', 'n_tokens'")
    acts, acts_dir = data_for(P, "train", progress)
    base = [train_cfg(P, s) for s in P.seeds[:2]]
    if axis != "n_tokens" or isinstance(acts, SparsifyRun) or base[0].lr_schedule != "constant":
        # a decaying rate (sparsify's, or ours with lr_schedule linear): every length is its own run; along
        # d_sae and k each point also publishes the lengths its convergence check compares, where they are free
        train_many(P, acts, acts_dir, [dataclasses.replace(c, **{axis: v}) for v in values for c in base], progress,
                   snapshots=snapshot_lengths(P, acts) if axis != "n_tokens" else ())
        return acts, acts_dir
    todo = {s: sorted(v for v in set(values) if not is_trained(acts_dir, dataclasses.replace(c, n_tokens=v), acts))
            for s, c in zip(P.seeds, base)}
    cfgs = [dataclasses.replace(c, n_tokens=todo[s][-1]) for s, c in zip(P.seeds, base) if todo[s]]
    if cfgs:
        train_family_cached(acts, acts_dir, cfgs, progress=progress, metadata=_meta(P, None), device=_device(P),
                            snapshots=[tuple(todo[c.seed][:-1]) for c in cfgs])
    return acts, acts_dir


def pair_row(P: RunParams, acts: TrainData, acts_dir: Path | None, cfgs: list[TrainConfig], held: np.ndarray, progress: bool,
             hookpoint: str | None = None) -> dict:
    """Train (or load) the two SAEs `cfgs` and return `matching.summarize` of their matching plus each
    SAE's held-out FVU and L0 (`evaluate`) and the FVU's noise floor over held-out shards (`recon_metrics`)."""
    pair = train_many(P, acts, acts_dir, cfgs, progress, hookpoint=hookpoint)
    m = pair_matches(pair, progress=False)[0, 1]
    ev = [evaluate(t.sae, held, device=P.device, noise_shards=M.NOISE_SHARDS) for t in pair]
    return {**summarize(m, P.threshold), "heldout_fvu": [e["fvu"] for e in ev], "heldout_l0": [e["l0"] for e in ev],
            **({"heldout_fvu_shard_sd": [e["fvu_shard_sd"] for e in ev]} if all("fvu_shard_sd" in e for e in ev) else {})}


SPARSITY_FIELD = {"relu": "l1_coefficient", "gated": "l1_coefficient", "jumprelu": "l0_coefficient"}
# where `architecture_pairs` starts each search. Measured on SmolLM2 mlp_out.15, 576 latents, 250K tokens:
# ReLU λ₁ 0.03 / 0.1 / 0.2 / 1 → L0 259 / 98 / 27 / 1; Gated λ₁ 0.03 / 0.2 → 330 / 93; JumpReLU λ₀ 0.03 and 1
# both → L0 570 of 576 (with DeepMind's bandwidth ε the threshold hardly moves in so few tokens).
CALIBRATION_START = {"relu": 0.15, "gated": 0.5, "jumprelu": 1.0}


def _next_coefficient(runs_: list[tuple[float, float]], target: float) -> float:
    """Next λ to try from (λ, L0) runs, in log–log space: interpolate between the closest runs either side of
    the target once it is bracketed (regula falsi), else step from the closest run with the secant slope
    of the last two runs (−1 with one run), clipped to [−3, −0.2]."""
    pts = sorted((np.log(c), np.log(max(l0, 1e-2))) for c, l0 in runs_)
    t = np.log(target)
    above = [p for p in pts if p[1] > t]  # L0 too high: λ too small
    below = [p for p in pts if p[1] <= t]
    if above and below:
        (x0, y0), (x1, y1) = max(above, key=lambda p: p[0]), min(below, key=lambda p: p[0])
        return float(np.exp(x0 + (t - y0) * (x1 - x0) / (y1 - y0))) if y1 != y0 else float(np.exp((x0 + x1) / 2))
    slope = -1.0
    last = [(np.log(c), np.log(max(l0, 1e-2))) for c, l0 in runs_[-2:]]
    if len(last) == 2 and last[0][0] != last[1][0]:
        slope = float(np.clip((last[1][1] - last[0][1]) / (last[1][0] - last[0][0]), -3.0, -0.2))
    x, y = min(pts, key=lambda p: abs(p[1] - t))
    return float(np.exp(x + (t - y) / slope))


def calibrate_sparsity(P: RunParams, acts: TrainData, acts_dir: Path | None, cfg: TrainConfig, target_l0: float, held: np.ndarray,
                       *, n_tokens: int, n_runs: int, hookpoint: str | None = None,
                       progress: bool = True) -> tuple[TrainConfig, list[dict]]:
    """`cfg` with its sparsity coefficient (λ₁ of ReLU/Gated, λ₀ of JumpReLU) set so that held-out L0 ≈ target_l0.

    Search: `n_runs` runs of `n_tokens` tokens (cached SAEs), starting at cfg's coefficient, each next
    coefficient from `_next_coefficient` (log–log secant, then regula falsi once the target is
    bracketed). Returns cfg with the coefficient whose short run came closest to the target in
    log L0, and every run tried (λ, L0, FVU). Architectures without a coefficient (TopK, BatchTopK:
    L0 = k by construction) are returned unchanged. The full-length run's L0 can differ from the
    short one's; callers report the L0 actually reached.
    """
    field = SPARSITY_FIELD.get(cfg.architecture)
    if field is None:
        return cfg, []
    if n_runs < 1 or target_l0 <= 0:
        raise ValueError(f"calibration needs n_runs >= 1 and target_l0 > 0 (got {n_runs}, {target_l0})")
    tried: list[dict] = []
    coef = getattr(cfg, field)
    for _ in range(n_runs):
        short = dataclasses.replace(cfg, n_tokens=n_tokens, **{field: coef})
        ev = evaluate(train_one(P, acts, acts_dir, short, progress, hookpoint=hookpoint).sae, held, device=P.device)
        tried.append({field: coef, "l0": ev["l0"], "fvu": ev["fvu"]})
        coef = _next_coefficient([(t[field], t["l0"]) for t in tried], target_l0)
    best = min(tried, key=lambda t: abs(np.log(max(t["l0"], 1e-2) / target_l0)))
    return dataclasses.replace(cfg, **{field: best[field]}), tried


def hookpoint_pairs(P: RunParams, points: list[tuple[str, int]], *, progress: bool = True) -> list[dict]:
    """Seed pairs (P.seeds[:2]) at each (hookpoint, d_sae) point, other settings as P; every hookpoint's
    activations come from one forward pass per split. Rows: hookpoint, d_sae, then `pair_row`."""
    hps = list(dict.fromkeys(h for h, _ in points))
    cfgs = {h: [c for size in dict.fromkeys(s for p, s in points if p == h) for c in point_cfgs(P, size)]
            for h in hps}
    train, held = data_for(P, "train", progress, hps), data_for(P, "heldout", progress, hps)
    _train_hookpoints_together(P, train, cfgs, progress)
    rows = []
    for h, size in points:
        acts, acts_dir = train[h]
        cfgs = point_cfgs(P, size)
        rows.append({"hookpoint": h, "d_sae": size, **pair_row(P, acts, acts_dir, cfgs, held[h][0], progress, h)})
    return rows


def point_cfgs(P: RunParams, size: int) -> list[TrainConfig]:
    """The seed pair (P.seeds[:2]) of `hookpoint_pairs` at `size` latents, other settings as P."""
    return [dataclasses.replace(train_cfg(P, s), d_sae=size) for s in P.seeds[:2]]


def architecture_pairs(P: RunParams, architectures: list[str], *, calib_tokens: int, calib_runs: int,
                       progress: bool = True) -> list[dict]:
    """Seed pairs of each architecture at P's hookpoint and size. ReLU, Gated and JumpReLU get the
    sparsity coefficient whose short run reaches held-out L0 ≈ P.k (`calibrate_sparsity`, on seed
    P.seeds[0]); TopK and BatchTopK use k. Rows: architecture, the coefficient and calibration runs,
    then `pair_row` (whose `heldout_l0` is the L0 the full runs actually reached)."""
    acts, acts_dir = data_for(P, "train", progress)
    held = heldout_acts(P, progress=progress)
    rows = []
    for arch in architectures:
        field = SPARSITY_FIELD.get(arch)
        start = dataclasses.replace(train_cfg(P, P.seeds[0]), architecture=arch,
                                    **({field: CALIBRATION_START[arch]} if field else {}))
        cfg, tried = calibrate_sparsity(P, acts, acts_dir, start, P.k, held, n_tokens=calib_tokens,
                                        n_runs=calib_runs, progress=progress)
        cfgs = [dataclasses.replace(cfg, seed=s) for s in P.seeds[:2]]
        rows.append({"architecture": arch, "sparsity_coefficient": getattr(cfg, field) if field else None,
                     "calibration": tried, **pair_row(P, acts, acts_dir, cfgs, held, progress)})
    return rows


_SPARSIFY_UNCHECKED = {"converged": None, "why": "sparsify decays its learning rate to zero at the end of each run, so "
                       "the shorter runs are not snapshots of the longer one (checking would cost 0.75x more training)"}


def convergence(P: RunParams, *, progress: bool = True, **changes) -> dict:
    """`saesanity.convergence.check` of P's seed pair at n/4, n/2 and n training tokens (`check_lengths`), with
    `changes` (d_sae=, k=: a point of Fig. 5's sweeps) applied to P: the shorter SAEs are snapshots of the run to n
    (free on a cold cache, `snapshot_lengths`; 0.75× more training when the n-token SAEs were trained without
    them); under `lr_schedule: linear` they are runs of their own (0.75× more training, in the same pass). Not
    checked with sparsify, whose learning rate also decays to zero at each run's end (its runs are separate
    passes of the model, so checking would cost 0.75× more of them)."""
    from . import convergence as conv

    if P.trainer == "sparsify":
        return dict(_SPARSIFY_UNCHECKED)
    P = dataclasses.replace(P, **changes) if changes else P
    rows = sweep(P, "n_tokens", check_lengths(P), progress=progress)
    return conv.check([{"n_tokens": r["n_tokens"], "fvu": float(np.mean(r["heldout_fvu"])),
                        "shared": r["shared_frac_paper"]} for r in rows])


def sweep_convergence(P, *, progress: bool = True) -> dict:
    """`saesanity.convergence.family` of Fig. 5's points off the token axis: the base pair and each size and k of
    `P.sizes` / `P.ks` (`convergence` at that point; its shorter runs are the snapshots `sweep_train` published).
    The token axis is the base pair's own trend."""
    from . import convergence as conv

    points = {"base": {}, **{f"d_sae={s}": {"d_sae": s} for s in P.sizes if s != P.d_sae},
              **{f"k={k}": {"k": k} for k in P.ks if k != P.k}}
    return conv.family({name: convergence(P, progress=progress, **ch) for name, ch in points.items()})


def fvu_convergence(P: RunParams, cfg: TrainConfig, held: np.ndarray, *, hookpoint: str | None = None,
                    progress: bool = True) -> dict:
    """`saesanity.convergence.check` of one SAE (`cfg`, no seed pair: FVU alone) at P's `check_lengths` on its
    held-out activations `held`, the data P reads at `hookpoint` (P's own where None). The shorter runs are the
    snapshots `train_hookpoints(snapshots=True)` published, or else trained here. Not checked with sparsify."""
    from . import convergence as conv

    acts, acts_dir = (data_for(P, "train", progress, [hookpoint])[hookpoint] if hookpoint
                      else data_for(P, "train", progress))
    if _by_sparsify(acts, cfg):
        return dict(_SPARSIFY_UNCHECKED)
    lengths = check_lengths(P)
    saes = train_many(P, acts, acts_dir, [dataclasses.replace(cfg, n_tokens=m) for m in lengths], progress,
                      hookpoint=hookpoint)
    return conv.check([{"n_tokens": m, "fvu": evaluate(t.sae, held, device=P.device)["fvu"], "shared": None}
                       for m, t in zip(lengths, saes)])
