"""Explainers: a latent's explanation examples -> one sentence.

  * `llm` — a chat model (any `llm.Backend`) shown the explanation examples with activating tokens
    marked (`prompts.explain`), greedy decoding, first line of the reply kept;
  * `top-tokens` — a deterministic **baseline**, no model: "the tokens 'a', 'b', …", the `n` tokens
    that most often carry a non-zero activation in the explanation examples (ties by total activation).
    It is labelled as a baseline wherever it appears: it measures how far a latent is explained by
    its token identity alone.
"""

from __future__ import annotations

from collections import defaultdict

from . import prompts
from .examples import LatentExamples, render
from .llm import Backend

EXPLAINERS = ("llm", "top-tokens")


def llm_prompt(ex: LatentExamples, pieces: list[str]) -> list[dict[str, str]]:
    return prompts.explain([prompts.mark(render(pieces, e.tokens), e.acts > 0) for e in ex.explain])


def explain_llm(backend: Backend, exs: list[LatentExamples], pieces: list[str], max_new_tokens: int = 40) -> list[str]:
    replies = backend.generate([llm_prompt(ex, pieces) for ex in exs], max_new_tokens)
    return [prompts.clean_explanation(r) for r in replies]


def top_tokens(ex: LatentExamples, pieces: list[str], n: int = 5) -> list[str]:
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for e in ex.explain:
        for t, a in zip(render(pieces, e.tokens), e.acts):
            if a > 0 and t.strip():
                count[t.strip()] += 1
                total[t.strip()] += float(a)
    return sorted(count, key=lambda t: (-count[t], -total[t], t))[:n]


def explain_top_tokens(exs: list[LatentExamples], pieces: list[str], n: int = 5) -> list[str]:
    return ["the tokens " + ", ".join(f"'{t}'" for t in top_tokens(ex, pieces, n)) for ex in exs]
