"""Explain and score a set of latents end to end, cached as a whole and call by call.

`score_latents` draws each latent's examples (`examples.sample_examples`), explains it
(`explainers`), scores the explanation with every requested scorer (`scorers`) and returns one
record per latent:
    {"latent", "n_active_windows", "explanation",
     "<scorer>": {"labels": [n], "scores": [n], "auroc": float, "accuracy": float | None}}
where `accuracy` is the balanced accuracy at P(yes) ≥ 0.5 for the chat-model scorers (the papers'
"score") and None for the embedding scorer (a cosine has no natural cut). The chat-model scorers add
"answer_mass" (mean over the examples of the probability on the yes + no tokens) and, with
`examples_per_prompt` > 1, "n_fallback" (examples rescored one per prompt after a malformed reply).

Latents are processed in chunks of `_LATENT_CHUNK`: a chunk's examples are drawn, all its
explanations requested as one list, then every detection and fuzzing prompt of the chunk as one
list, so a backend can batch them (hf-local) or keep many requests in flight (openai-compatible).
Every call is independent of the others in its list, so the records are those of scoring one
latent at a time (for hf-local up to the bfloat16 batch-padding differences the README describes).

The records are cached under (the caller's key fields, the config, the latents); inside a run every
model call is cached on its own (`llm.CallCache`), so an interrupted run resumes where it stopped and
a finished one is reloaded without loading any model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from ..cache import cached
from . import explainers, roc, scorers
from .examples import LatentActs, Windows, sample_examples
from .llm import BACKENDS, Backend, make_backend

_VERSION = 1
_LATENT_CHUNK = 256  # latents drawn, explained and scored together (module docstring)
_NOT_IN_KEY = ("llm_concurrency",)  # settings that cannot change a record: never part of the records' cache key
_KEY_DEFAULTS = {"examples_per_prompt": 1}  # left out of the key at these values: keys made before they existed hold


@dataclass(frozen=True)
class InterpConfig:
    explainer: str = "llm"  # llm | top-tokens (a baseline, no model)
    llm_backend: str = "hf-local"  # hf-local | openai-compatible: explains (if explainer=llm) and scores
    llm_model: str = "smollm2-135m"  # a model spec for hf-local; the served model name for openai-compatible
    api_base: str = ""  # openai-compatible base URL, e.g. http://localhost:8000/v1
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoint's key
    llm_dtype: str = "bfloat16"  # hf-local forward-pass dtype
    scorers: tuple[str, ...] = ("detection", "fuzzing", "embedding")
    n_explain: int = 40  # explanation examples per latent, spread over the activation quantiles
    n_score_act: int = 10  # activating scoring examples per latent (held out from the explainer)
    n_score_non: int = 10  # non-activating scoring examples per latent
    n_quantiles: int = 10
    ctx_len: int = 32  # tokens per example window
    highlight_frac: float = 0.3  # fuzzing marks tokens >= this x the example's maximum activation
    max_new_tokens: int = 40  # explanation length cap (a reply is cut at its first line break)
    seed: int = 0
    examples_per_prompt: int = 1  # detection / fuzzing excerpts per prompt (1: the papers'; >1: numbered answers)
    llm_concurrency: int = 32  # openai-compatible requests in flight at once (no effect on results)

    def check(self) -> None:
        if self.explainer not in explainers.EXPLAINERS:
            raise ValueError(f"explainer={self.explainer!r}; valid: {list(explainers.EXPLAINERS)}")
        if self.llm_backend not in BACKENDS:
            raise ValueError(f"llm_backend={self.llm_backend!r}; valid: {list(BACKENDS)}")
        bad = [s for s in self.scorers if s not in scorers.SCORERS]
        if bad or not self.scorers:
            raise ValueError(f"scorers {bad or list(self.scorers)}: valid {list(scorers.SCORERS)}")
        if min(self.n_explain, self.n_score_act, self.n_score_non, self.n_quantiles, self.ctx_len) < 1:
            raise ValueError("n_explain, n_score_act, n_score_non, n_quantiles and ctx_len must all be >= 1")
        if not 0 < self.highlight_frac <= 1:
            raise ValueError(f"highlight_frac={self.highlight_frac}: must lie in (0, 1]")
        for name in ("examples_per_prompt", "llm_concurrency"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}: must be an integer >= 1")

    @property
    def needs_llm(self) -> bool:
        return self.explainer == "llm" or any(s != "embedding" for s in self.scorers)

    def describe(self) -> str:
        llm = f"{self.llm_backend} {self.llm_model}"
        parts = [f"explainer: {llm if self.explainer == 'llm' else 'top-tokens (baseline, no model)'}"]
        chat = [s for s in self.scorers if s != "embedding"]
        if chat:
            parts.append(f"{' + '.join(chat)} scorer: {llm}")
        if "embedding" in self.scorers:
            parts.append("embedding scorer: all-MiniLM-L6-v2")
        return "; ".join(parts)


def _record(cfg: InterpConfig, name: str, labels: np.ndarray, scores_: np.ndarray) -> dict:
    both = 0 < labels.sum() < len(labels)
    return {"labels": labels.tolist(), "scores": np.round(scores_, 6).tolist(),
            "auroc": roc.latent_auroc(labels, scores_) if both else None,
            "accuracy": scorers.balanced_accuracy(labels, scores_) if name != "embedding" and both else None}


def run(la: LatentActs, win: Windows, latents: list[int], cfg: InterpConfig, pieces: list[str], *,
        backend: Backend | None = None, encoder: scorers.Encoder | None = None, progress: bool = True,
        desc: str = "auto-interp") -> list[dict]:
    """Records (module docstring) for every eligible latent of `latents`, uncached at this level.
    `progress=False` also silences the backend's bars during the run."""
    backend = backend or (make_backend(cfg.llm_backend, cfg.llm_model, api_base=cfg.api_base,
                                       api_key_env=cfg.api_key_env, dtype=cfg.llm_dtype,
                                       max_concurrency=cfg.llm_concurrency) if cfg.needs_llm else None)
    encoder = encoder or scorers.Encoder()
    chat = [s for s in cfg.scorers if s != "embedding"]
    latents = [int(f) for f in latents]
    quiet = not progress and getattr(backend, "progress", False)
    if quiet:
        backend.progress = False
    try:
        return _run(la, win, latents, cfg, pieces, backend, encoder, chat, progress, desc)
    finally:
        if quiet:
            backend.progress = True


def _run(la, win, latents, cfg, pieces, backend, encoder, chat, progress, desc) -> list[dict]:
    out = []
    bar = tqdm(total=len(latents), desc=desc, unit="latent", disable=not progress)
    for c in range(0, len(latents), _LATENT_CHUNK):
        chunk = latents[c:c + _LATENT_CHUNK]
        exs = [sample_examples(la, win, f, n_explain=cfg.n_explain, n_score_act=cfg.n_score_act,
                               n_score_non=cfg.n_score_non, n_quantiles=cfg.n_quantiles, seed=cfg.seed) for f in chunk]
        exs = [ex for ex in exs if ex is not None]
        if cfg.explainer == "llm":
            expls = explainers.explain_llm(backend, exs, pieces, cfg.max_new_tokens)
        else:
            expls = explainers.explain_top_tokens(exs, pieces)
        jobs = [scorers.chat_job(name, expl, ex, pieces, cfg.highlight_frac, cfg.seed)
                for ex, expl in zip(exs, expls) for name in chat]
        scored = iter(scorers.score_chat(backend, jobs, cfg.examples_per_prompt, cfg.seed) if jobs else [])
        for ex, expl in zip(exs, expls):
            rec = {"latent": ex.latent, "n_active_windows": ex.n_active_windows, "explanation": expl}
            got = {name: next(scored) for name in chat}
            for name in cfg.scorers:
                if name == "embedding":
                    y, s = scorers.embedding(encoder, expl, ex, pieces)
                    rec[name] = _record(cfg, name, y, s)
                    continue
                r = got[name]
                rec[name] = _record(cfg, name, r.labels, r.scores)
                rec[name]["answer_mass"] = float(np.mean(r.mass))
                if cfg.examples_per_prompt > 1:
                    rec[name]["n_fallback"] = r.n_fallback
            out.append(rec)
        bar.update(len(chunk))
    bar.close()
    return out


def score_latents(key: dict, la: LatentActs, win: Windows, latents: list[int], cfg: InterpConfig,
                  pieces: list[str] | Callable[[], list[str]], **kw) -> list[dict]:
    """`run`, cached under (`key` — what identifies `la` and `win` —, cfg, latents). `pieces` may be
    a function returning the token-piece table, called only when something has to be computed."""

    def compute(work: Path) -> dict:
        recs = run(la, win, latents, cfg, pieces() if callable(pieces) else pieces, **kw)
        (work / "records.json").write_text(json.dumps(recs))
        return {"n_records": len(recs)}

    cfg_fields = {k: v for k, v in dataclasses.asdict(cfg).items()
                  if k not in _NOT_IN_KEY and not (k in _KEY_DEFAULTS and v == _KEY_DEFAULTS[k])}
    fields = {**key, "cfg": cfg_fields, "latents": [int(f) for f in latents], "ctx": win.ctx_len}
    path = cached("autointerp", fields, compute, version=_VERSION)
    return json.loads((path / "records.json").read_text())


def pooled_arrays(records: list[dict], scorer: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of one scorer pooled over every record."""
    y = np.concatenate([r[scorer]["labels"] for r in records]) if records else np.zeros(0)
    s = np.concatenate([r[scorer]["scores"] for r in records]) if records else np.zeros(0)
    return y.astype(int), s.astype(float)
