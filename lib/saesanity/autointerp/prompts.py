"""Every prompt the pipeline sends, in one place (written for this package).

Examples are shown as text with the marked tokens between `<<` and `>>`; adjacent marked tokens
share one pair of marks. The explainer sees activating tokens marked; the detection scorer sees
plain text; the fuzzing scorer sees text whose marks are either the latent's strongest tokens
(≥ `highlight_frac` × that example's maximum) or random ones.

`detection_numbered` / `fuzzing_numbered` show several numbered excerpts in one prompt and ask for
one line per excerpt, "1: Yes", "2: No", …, in order (`llm.parse_numbered_answers` reads them).
"""

from __future__ import annotations

import re

from collections.abc import Sequence

L, R = "<<", ">>"

EXPLAIN_SYSTEM = (
    "You are studying a neural network. One of its units (a 'feature') fires on some words of a text. "
    f"You are shown text excerpts in which the words where the feature fires are marked {L}like this{R}. "
    "Say in one short sentence what the marked words have in common (the words themselves, their "
    "meaning, or the context around them). Reply with the sentence only.")

DETECTION_SYSTEM = (
    "You check descriptions of a neural-network feature against text. Given the description of what the "
    "feature responds to and an excerpt, answer Yes if the feature would fire somewhere in the excerpt, "
    "otherwise No. Answer with one word: Yes or No.")

FUZZING_SYSTEM = (
    "You check descriptions of a neural-network feature against text. Given the description of what the "
    f"feature responds to and an excerpt with some words marked {L}like this{R}, answer Yes if the marked "
    "words are ones the description says the feature fires on, otherwise No. Answer with one word: Yes or No.")


NUMBERED_REPLY = ("Reply with one line per excerpt, in order, written as the excerpt's number, a colon and "
                  "Yes or No (for example '1: Yes'), and nothing else.")

DETECTION_NUMBERED_SYSTEM = (
    "You check descriptions of a neural-network feature against text. Given the description of what the "
    "feature responds to and numbered excerpts, decide for each excerpt whether the feature would fire "
    "somewhere in it: Yes or No. " + NUMBERED_REPLY)

FUZZING_NUMBERED_SYSTEM = (
    "You check descriptions of a neural-network feature against text. Given the description of what the "
    f"feature responds to and numbered excerpts with some words marked {L}like this{R}, decide for each "
    "excerpt whether its marked words are ones the description says the feature fires on: Yes or No. "
    + NUMBERED_REPLY)


def mark(pieces: Sequence[str], marked: Sequence[bool]) -> str:
    """Concatenate token strings, wrapping each run of marked tokens in one `<<`…`>>` pair."""
    out, inside = [], False
    for p, m in zip(pieces, marked):
        if m and not inside:
            lead = p[: len(p) - len(p.lstrip())]  # keep the token's leading space outside the marks
            out.append(lead + L + p[len(lead):])
            inside = True
            continue
        if not m and inside:
            out.append(R)
            inside = False
        out.append(p)
    if inside:
        out.append(R)
    return "".join(out).replace("\n", " ")


def explain(examples: Sequence[str]) -> list[dict[str, str]]:
    body = "\n".join(f"Excerpt {i + 1}: {e}" for i, e in enumerate(examples))
    return [{"role": "system", "content": EXPLAIN_SYSTEM},
            {"role": "user", "content": f"{body}\n\nWhat do the marked words have in common?"}]


def detection(explanation: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": DETECTION_SYSTEM},
            {"role": "user", "content": f"Description: {explanation}\nExcerpt: {text}\n"
                                        "Would the feature fire in this excerpt? Yes or No?"}]


def fuzzing(explanation: str, text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": FUZZING_SYSTEM},
            {"role": "user", "content": f"Description: {explanation}\nExcerpt: {text}\n"
                                        "Are the marked words what the feature fires on? Yes or No?"}]


def _numbered(system: str, question: str, explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    if not texts:
        raise ValueError("a numbered prompt needs at least one excerpt")
    body = "\n".join(f"Excerpt {i + 1}: {t}" for i, t in enumerate(texts))
    n = len(texts)
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"Description: {explanation}\n{body}\n{question} Answer with {n} "
                                        f"line{'s' if n > 1 else ''}, 1 to {n}, each Yes or No."}]


def detection_numbered(explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    """One prompt for several plain excerpts (each one line; `mark` and the scorers remove line breaks)."""
    return _numbered(DETECTION_NUMBERED_SYSTEM, "For each excerpt: would the feature fire in it?", explanation,
                     texts)


def fuzzing_numbered(explanation: str, texts: Sequence[str]) -> list[dict[str, str]]:
    """One prompt for several marked excerpts."""
    return _numbered(FUZZING_NUMBERED_SYSTEM, "For each excerpt: are the marked words what the feature fires on?",
                     explanation, texts)


_ECHO = re.compile(r"^(?:the\s+)?marked\s+words\s+(?:all\s+)?(?:have\s+in\s+common|share|have|are)"
                   r"(?:\s+(?:that|is))?\s*[:,]?\s+", re.IGNORECASE)


def clean_explanation(reply: str) -> str:
    """First non-empty line of a reply, without a leading 'Explanation:'-style label, without the echo of our
    question ("The marked words have in common that …" -> "They …"; small models open most replies with it,
    which would make every explanation start alike), and without quotes."""
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    for label in ("explanation:", "answer:", "feature:"):
        if line.lower().startswith(label):
            line = line[len(label):].strip()
    rest = _ECHO.sub("", line, count=1)
    if rest and rest != line:
        line = rest[0].upper() + rest[1:]
    return line.strip('"\' ') or "(no explanation)"
