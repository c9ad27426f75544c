"""Chat-model backends for explaining and scoring, every call cached on disk.

Two operations, the same for every backend:
  * `generate(messages_list, max_new_tokens)` -> one reply per conversation (greedy / temperature 0);
  * `yes_probability(messages_list)` -> P(yes) per conversation, from the first answer token:
    P(yes) = Σ_{t ∈ YES} p(t) / (Σ_{t ∈ YES} p(t) + Σ_{t ∈ NO} p(t)), where YES / NO are the tokens that
    read "yes" / "no" once stripped and lower-cased ("Yes", " yes", …). Normalising over the two
    answers makes a small model's score usable even when it spreads mass elsewhere; the mass it put
    on the two answers is returned too (`last_answer_mass`), so a reader can see how much to trust it.

Backends:
  * `HFLocal` — a transformers causal LM run here (default SmolLM2-135M-Instruct from the offline GGUF);
    P(yes) from its next-token distribution after the chat template's assistant prefix.
  * `OpenAICompatible` — any chat-completions endpoint (vLLM, llama.cpp server, Ollama, OpenAI) by base
    URL + model name; the key comes from an environment variable; retries with exponential back-off on
    429 / 5xx / connection errors; P(yes) from the `top_logprobs` of the first answer token.

The call cache (`CallCache`) keys each call by (backend, model, operation, conversation, settings) —
SHA-256 of their canonical JSON — and stores one small JSON file per call under
`<cache>/llm/<key[:2]>/<key>.json`, written atomically; an interrupted run loses at most the batch
in flight, and a rerun makes no model call it has made before.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import cache_dir

Messages = list[dict[str, str]]
BACKENDS = ("hf-local", "openai-compatible")


class LLMError(RuntimeError):
    """A model call failed for good (bad request, retries exhausted, unusable reply)."""


class CallCache:
    """One JSON file per call under `root` (default `<cache>/llm`), keyed by the call's content."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "llm"
        self.hits = self.misses = 0

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Any | None:
        p = self._path(key)
        try:
            value = json.loads(p.read_text())["value"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: str, fields: dict[str, Any], value: Any) -> None:
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps({"call": fields, "value": value}, ensure_ascii=False))
        os.replace(tmp, p)


def _answer_word(token: str) -> str:
    return token.strip().strip(".,:!").lower()


class Backend:
    """Shared caching logic; subclasses implement `_generate` and `_yes_probability` on uncached calls."""

    name = "?"

    def __init__(self, model: str, cache: CallCache | None = None):
        self.model = model
        self.cache = cache or CallCache()
        self.last_answer_mass: np.ndarray = np.zeros(0)

    def describe(self) -> str:
        return f"{self.name}:{self.model}"

    def _cached(self, op: str, convs: list[Messages], settings: dict, compute) -> list[Any]:
        fields = [{"backend": self.name, "model": self.model, "op": op, "messages": c, **settings} for c in convs]
        keys = [CallCache.key(f) for f in fields]
        out = [self.cache.get(k) for k in keys]
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            for i, v in zip(todo, compute([convs[i] for i in todo])):
                self.cache.put(keys[i], fields[i], v)
                out[i] = v
        return out

    def generate(self, convs: list[Messages], max_new_tokens: int = 60) -> list[str]:
        return self._cached("generate", convs, {"max_new_tokens": max_new_tokens},
                            lambda cs: self._generate(cs, max_new_tokens))

    def yes_probability(self, convs: list[Messages]) -> np.ndarray:
        """[n] P(yes) per conversation (module docstring); sets `last_answer_mass` [n]."""
        vals = self._cached("yes_no", convs, {}, self._yes_probability)
        self.last_answer_mass = np.array([v[1] for v in vals], dtype=float)
        return np.array([v[0] for v in vals], dtype=float)

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> list[str]:
        raise NotImplementedError

    def _yes_probability(self, convs: list[Messages]) -> list[tuple[float, float]]:
        raise NotImplementedError


class HFLocal(Backend):
    """A transformers chat model on this machine (`models.load_model(spec)`, variant `trained`)."""

    name = "hf-local"

    def __init__(self, model: str = "smollm2-135m", dtype: str = "bfloat16", batch_size: int = 16,
                 device: str = "cpu", cache: CallCache | None = None):
        super().__init__(model, cache)
        self.dtype, self.batch_size, self.device = dtype, batch_size, device
        self._lm = None

    @property
    def lm(self):
        if self._lm is None:
            from ..models import load_model
            from .examples import piece_table

            self._lm = load_model(self.model, "trained", device=self.device, dtype=self.dtype)
            words = [_answer_word(t) for t in piece_table(self._lm.tokenizer)]
            self._yes = [i for i, w in enumerate(words) if w == "yes"]
            self._no = [i for i, w in enumerate(words) if w == "no"]
            if not self._yes or not self._no:
                raise LLMError(f"{self.model}'s vocabulary has no single 'yes'/'no' token to score with")
        return self._lm

    def _ids(self, conv: Messages) -> list[int]:
        tok = self.lm.tokenizer
        if not tok.chat_template:
            raise LLMError(f"{self.model}'s tokenizer has no chat template; use an instruction-tuned model")
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> list[str]:
        """Greedy replies, `batch_size` conversations per `generate` call (left-padded, similar lengths
        together), each stopped at its first line break or end-of-turn."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        seqs = [self._ids(c) for c in convs]
        order = np.argsort([len(s) for s in seqs])
        out = [""] * len(seqs)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, width - len(seqs[i]):] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]):] = 1
            with torch.no_grad():
                gen = model.generate(ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad, stop_strings=["\n"],
                                     tokenizer=tok)
            for r, i in enumerate(idx):
                out[i] = tok.decode(gen[r, width:], skip_special_tokens=True).strip()
        return out

    def _yes_probability(self, convs: list[Messages]) -> list[tuple[float, float]]:
        """Right-padded batches (causal attention: padding after a row's last token cannot change it);
        the LM head is applied only at each row's last position."""
        import torch

        model = self.lm.model
        seqs = [self._ids(c) for c in convs]
        order = np.argsort([len(s) for s in seqs])  # similar lengths per batch: little padding
        out: list[tuple[float, float]] = [(0.5, 0.0)] * len(seqs)
        yes, no = torch.tensor(self._yes), torch.tensor(self._no)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            lens = torch.tensor([len(seqs[i]) for i in idx])
            ids = torch.zeros(len(idx), int(lens.max()), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : lens[r]] = torch.tensor(seqs[i])
            with torch.no_grad():
                h = model.model(input_ids=ids.to(self.device)).last_hidden_state
                last = h[torch.arange(len(idx)), lens - 1]
                logp = torch.log_softmax(model.lm_head(last).float(), -1).cpu()
            p_yes, p_no = logp[:, yes].exp().sum(1), logp[:, no].exp().sum(1)
            for r, i in enumerate(idx):
                mass = float(p_yes[r] + p_no[r])
                out[i] = (float(p_yes[r]) / mass if mass > 0 else 0.5, mass)
        return out


class OpenAICompatible(Backend):
    """A chat-completions endpoint: POST `{base_url}/chat/completions`, key from `$api_key_env`."""

    name = "openai-compatible"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5,
                 backoff_s: float = 1.0, timeout_s: float = 120.0, top_logprobs: int = 20,
                 cache: CallCache | None = None):
        super().__init__(model, cache)
        self.base_url = base_url.rstrip("/")
        self.api_key_env, self.max_retries, self.backoff_s = api_key_env, max_retries, backoff_s
        self.timeout_s, self.top_logprobs = timeout_s, top_logprobs

    def _post(self, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(),
                                     headers=headers, method="POST")
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}: {e.read()[:300]!r}"
                if e.code != 429 and e.code < 500:
                    raise LLMError(f"{self.base_url} refused the request ({last}); check model "
                                   f"{self.model!r} and ${self.api_key_env}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = repr(e)
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise LLMError(f"{self.base_url}: no answer after {self.max_retries + 1} tries; last error {last}")

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> list[str]:
        return [self._post({"model": self.model, "messages": c, "max_tokens": max_new_tokens, "temperature": 0})
                ["choices"][0]["message"]["content"].strip() for c in convs]

    def _yes_probability(self, convs: list[Messages]) -> list[tuple[float, float]]:
        out = []
        for c in convs:
            reply = self._post({"model": self.model, "messages": c, "max_tokens": 1, "temperature": 0,
                                "logprobs": True, "top_logprobs": self.top_logprobs})
            out.append(parse_yes_no(reply))
        return out


def parse_yes_no(reply: dict) -> tuple[float, float]:
    """(P(yes), mass on yes/no) from a chat-completions reply's first-token `top_logprobs`; when the
    server sent no log-probs, the answer text alone (1 / 0, mass 0 to flag it)."""
    choice = reply["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        top = content[0].get("top_logprobs") or [{"token": content[0]["token"], "logprob": content[0]["logprob"]}]
        p = {"yes": 0.0, "no": 0.0}
        for t in top:
            w = _answer_word(t["token"])
            if w in p:
                p[w] += math.exp(t["logprob"])
        mass = p["yes"] + p["no"]
        if mass > 0:
            return p["yes"] / mass, mass
    word = _answer_word((choice.get("message") or {}).get("content") or "")
    return (1.0 if word.startswith("yes") else 0.0 if word.startswith("no") else 0.5), 0.0


def make_backend(backend: str, model: str, *, api_base: str = "", api_key_env: str = "OPENAI_API_KEY",
                 dtype: str = "bfloat16", device: str = "cpu", cache: CallCache | None = None) -> Backend:
    """The backend named by a notebook's parameters (`llm_backend`, `llm_model`, `api_base`, …)."""
    if backend == "hf-local":
        return HFLocal(model, dtype=dtype, device=device, cache=cache)
    if backend == "openai-compatible":
        if not api_base:
            raise LLMError("llm_backend 'openai-compatible' needs api_base, e.g. 'http://localhost:8000/v1'")
        return OpenAICompatible(model, api_base, api_key_env, cache=cache)
    raise LLMError(f"llm_backend {backend!r}; valid: {list(BACKENDS)}")
