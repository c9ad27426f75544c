"""Chat-model backends for explaining and scoring, every call cached on disk.

Three operations, the same for every backend:
  * `generate(messages_list, max_new_tokens)` -> one reply per conversation (greedy / temperature 0);
  * `yes_probability(messages_list)` -> P(yes) per conversation, from the first answer token:
    P(yes) = Σ_{t ∈ YES} p(t) / (Σ_{t ∈ YES} p(t) + Σ_{t ∈ NO} p(t)), where YES / NO are the tokens that
    read "yes" / "no" once stripped and lower-cased ("Yes", " yes", …). Normalising over the two
    answers makes a small model's score usable even when it spreads mass elsewhere; the mass it put
    on the two answers is returned too (`last_answer_mass`), so a reader can see how much to trust it.
  * `numbered_yes_no(messages_list, n_answers)` -> for a prompt showing n numbered excerpts and asking
    for one "k: Yes" / "k: No" line each, the n (P(yes), mass) pairs read off the greedy reply, or the
    reason it is malformed (`parse_numbered_answers`). P(yes) of answer k is the formula above applied
    to the distribution of the token that carries answer k's word, i.e. conditional on the greedy
    reply before it.

Backends:
  * `HFLocal` — a transformers causal LM run here (default SmolLM2-135M-Instruct from the offline GGUF);
    P(yes) from its next-token distribution after the chat template's assistant prefix. Batches of
    `batch_size` conversations; the HTTP options below do not apply.
  * `OpenAICompatible` — any chat-completions endpoint (vLLM, llama.cpp server, Ollama, OpenAI) by base
    URL + model name; the key comes from an environment variable; up to `max_concurrency` requests in
    flight at once (a thread pool over urllib), each retried with exponential back-off on 429 / 5xx /
    connection errors; P(yes) from the `top_logprobs` of the answer token. Results come back in the
    order of the conversations whatever order the requests finish in. If a request fails for good (a
    4xx other than 429, retries exhausted, an unusable reply), the requests not yet sent are cancelled,
    those in flight finish and are cached, and one `LLMError` names the failure and the counts.

The call cache (`CallCache`) keys each call by (backend, model, operation, conversation, settings, and
hf-local's forward-pass dtype, whose answers it changes) —
SHA-256 of their canonical JSON — and keeps every call in one SQLite database,
`<cache>/llm/calls.sqlite` (WAL journal, so readers never wait and several processes can share it).
Writes are buffered and committed in batches (every `flush_every` calls or `flush_s` seconds, and
whenever a backend finishes a list of calls or fails), each commit atomic: a killed run loses at most
the calls of its last uncommitted batch, a rerun makes no model call it has committed before. Caches
of the earlier layout (one JSON file per call under `<cache>/llm/<key[:2]>/<key>.json`, same keys) are
read on a miss and copied into the database (`CallCache.migrate_files` moves them all at once).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from ..paths import cache_dir

Messages = list[dict[str, str]]
BACKENDS = ("hf-local", "openai-compatible")


class LLMError(RuntimeError):
    """A model call failed for good (bad request, retries exhausted, unusable reply)."""


class CallCache:
    """Every model call in one SQLite database `<root>/calls.sqlite` (root default `<cache>/llm`).

    Table `calls(id INTEGER PRIMARY KEY, key TEXT UNIQUE, call TEXT, value TEXT)`: `key` = SHA-256
    of `call`, the canonical JSON (sorted keys) of the call's fields; `value` = the result as JSON
    (rows in insertion order and a separate key index: appends, not random inserts of whole rows). `put` buffers;
    the buffer is committed in one transaction when it reaches `flush_every` calls, when `flush_s`
    seconds have passed since the last commit, and on `flush()` / `close()`. The database is opened
    lazily, in WAL mode with `synchronous=NORMAL` (a commit is atomic; a power cut may undo the last
    commits, never corrupt the file) and a busy timeout of `timeout_s`, so several threads and processes
    may read and write it at once (a local file system is needed: WAL does not work over NFS). An
    object used across `fork` reopens the database in the child and drops the parent's buffer.

    `hits` / `misses` count `get` / `get_many` look-ups. With `legacy=True`, a miss also looks for the
    earlier layout's file `<root>/<key[:2]>/<key>.json` ({"call", "value"}); a file found counts as a
    hit and is copied into the database with the next commit.
    """

    DB_NAME = "calls.sqlite"
    _SELECT_CHUNK = 500  # keys per SELECT … IN (…), below SQLite's old 999-variable limit

    def __init__(self, root: Path | None = None, *, flush_every: int = 1000, flush_s: float = 2.0,
                 timeout_s: float = 60.0, legacy: bool = True):
        if flush_every < 1 or flush_s < 0 or timeout_s < 0:
            raise ValueError(f"flush_every={flush_every}, flush_s={flush_s}, timeout_s={timeout_s}: "
                             "need flush_every >= 1 and non-negative seconds")
        self.root = Path(root) if root is not None else cache_dir() / "llm"
        self.path = self.root / self.DB_NAME
        self.flush_every, self.flush_s, self.timeout_s, self.legacy = flush_every, flush_s, timeout_s, legacy
        self.hits = self.misses = 0
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._pending: dict[str, tuple[str, str]] = {}  # key -> (call JSON, value JSON), not yet committed
        self._last_flush = time.monotonic()
        self._has_legacy: bool | None = None

    @staticmethod
    def canonical(fields: dict[str, Any]) -> str:
        return json.dumps(fields, sort_keys=True, ensure_ascii=False)

    @staticmethod
    def key(fields: dict[str, Any]) -> str:
        """SHA-256 hex digest of the call's canonical JSON (the same key as the per-file layout)."""
        return hashlib.sha256(CallCache.canonical(fields).encode()).hexdigest()

    # ---- connection

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never use the parent's connection or flush its buffer
            self._conn, self._pending, self._pid = None, {}, os.getpid()
        if self._conn is None:
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, "
                             "call TEXT NOT NULL, value TEXT NOT NULL)")
            except sqlite3.Error as e:
                conn.close()
                raise LLMError(f"call cache {self.path}: cannot open it ({e}); it must be on a local file "
                               "system, writable, and a SQLite database") from None
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Commit the buffer and close the connection (it reopens on next use)."""
        with self._lock:
            self.flush()
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ---- reads

    def _legacy_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def _legacy_dirs(self) -> bool:
        if self._has_legacy is None:
            self._has_legacy = self.legacy and self.root.is_dir() and any(
                p.is_dir() and len(p.name) == 2 for p in self.root.iterdir())
        return self._has_legacy

    def _legacy_get(self, key: str) -> Any | None:
        try:
            d = json.loads(self._legacy_path(key).read_text())
            value = d["value"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None
        self._pending[key] = (self.canonical(d.get("call", {})), json.dumps(value, ensure_ascii=False))
        return value

    def get_many(self, keys: list[str]) -> list[Any | None]:
        """The cached value of each key, None where there is none (counted in `hits` / `misses`)."""
        with self._lock:
            found: dict[str, Any] = {k: json.loads(self._pending[k][1]) for k in keys if k in self._pending}
            ask = sorted({k for k in keys if k not in found})
            if ask and self.path.exists():
                db = self._db()
                for s in range(0, len(ask), self._SELECT_CHUNK):
                    part = ask[s:s + self._SELECT_CHUNK]
                    rows = db.execute(f"SELECT key, value FROM calls WHERE key IN ({','.join('?' * len(part))})",
                                      part).fetchall()
                    found.update((k, json.loads(v)) for k, v in rows)
            if self._legacy_dirs():
                for k in ask:
                    if k not in found:
                        v = self._legacy_get(k)
                        if v is not None:
                            found[k] = v
            out = [found.get(k) for k in keys]
            n_hit = sum(v is not None for v in out)
            self.hits += n_hit
            self.misses += len(keys) - n_hit
            return out

    def get(self, key: str) -> Any | None:
        return self.get_many([key])[0]

    def count(self) -> int:
        """Calls stored: committed rows plus the uncommitted buffer's new keys."""
        with self._lock:
            if not self.path.exists():
                return len(self._pending)
            db = self._db()
            committed = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
            new = sum(db.execute("SELECT 1 FROM calls WHERE key=?", (k,)).fetchone() is None for k in self._pending)
            return committed + new

    # ---- writes

    def put(self, key: str, fields: dict[str, Any], value: Any) -> None:
        """Buffer one call's result; committed with the next flush (class docstring)."""
        self.put_canonical(key, self.canonical(fields), value)

    def put_canonical(self, key: str, call: str, value: Any) -> None:
        """`put` with the call's canonical JSON (`canonical(fields)`) already made."""
        with self._lock:
            if self._pid != os.getpid():
                self._db()
            self._pending[key] = (call, json.dumps(value, ensure_ascii=False))
            if len(self._pending) >= self.flush_every or time.monotonic() - self._last_flush >= self.flush_s:
                self.flush()

    def flush(self) -> None:
        """Commit every buffered call in one transaction (a no-op when the buffer is empty)."""
        with self._lock:
            if self._pid != os.getpid():
                self._db()
            self._last_flush = time.monotonic()
            if not self._pending:
                return
            rows = [(k, c, v) for k, (c, v) in self._pending.items()]
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO calls (key, call, value) VALUES (?, ?, ?)", rows)
                db.execute("COMMIT")
            except sqlite3.Error as e:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise LLMError(f"call cache {self.path}: could not commit {len(rows)} calls ({e}); another "
                               f"process may hold the write lock longer than timeout_s={self.timeout_s}") from None
            self._pending.clear()

    def migrate_files(self, delete: bool = False) -> int:
        """Copy every per-file entry `<root>/<xx>/<key>.json` into the database (same key) and return
        how many; with `delete=True` each migrated file is removed once committed. Unreadable files
        are left where they are and not counted."""
        if not self.root.is_dir():
            return 0
        n = 0
        done: list[Path] = []
        for sub in sorted(p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2):
            for f in sorted(sub.glob("*.json")):
                try:
                    d = json.loads(f.read_text())
                    row = (self.canonical(d["call"]), json.dumps(d["value"], ensure_ascii=False))
                except (json.JSONDecodeError, KeyError, TypeError, OSError):
                    continue
                with self._lock:
                    self._pending[f.stem] = row
                    n += 1
                    done.append(f)
                    if len(self._pending) >= self.flush_every:
                        self.flush()
                        if delete:
                            for g in done:
                                g.unlink(missing_ok=True)
                        done = []
        self.flush()
        if delete:
            for g in done:
                g.unlink(missing_ok=True)
            for sub in (p for p in self.root.iterdir() if p.is_dir() and len(p.name) == 2):
                if not any(sub.iterdir()):
                    sub.rmdir()
            self._has_legacy = None
        return n


def _answer_word(token: str) -> str:
    return token.strip().strip(".,:!").lower()


def _numbered_word(token: str) -> str:
    """A numbered reply's answer token read as a word: a tokenizer may merge the separator or bold marks
    into it (": Yes", " No\\n", "**Yes")."""
    return token.strip(" \t\r\n.,:;!*)-").lower()


def numbered_max_tokens(n: int) -> int:
    """Reply length allowed for n numbered answers ("12: Yes\\n" is about 4 tokens; twice that, plus slack)."""
    return 8 * n + 16


class Backend:
    """Shared caching logic; subclasses implement `_generate`, `_yes_probability` and `_numbered` on the
    uncached calls, each yielding (index into its list, value) pairs in any order.

    A progress bar (tqdm, text) counts the uncached calls of a list when there are at least
    `progress_min` of them and `progress` is true."""

    name = "?"

    def __init__(self, model: str, cache: CallCache | None = None, progress: bool = True, progress_min: int = 64):
        self.model = model
        self.cache = cache if cache is not None else CallCache()
        self.progress, self.progress_min = progress, progress_min
        self.last_answer_mass: np.ndarray = np.zeros(0)
        self.key_fields: dict = {}  # what else every call's cache key holds (hf-local: its dtype)

    def describe(self) -> str:
        return f"{self.name}:{self.model}"

    def _cached(self, op: str, convs: list[Messages], settings: dict | list[dict],
                compute: Callable[[list[Messages], list[dict]], Iterable[tuple[int, Any]]]) -> list[Any]:
        """Values of `op` on every conversation: cached ones read in one go, the others computed once per
        distinct call (duplicates share a result), each stored as it arrives; the cache is committed
        when the list is done or when `compute` fails."""
        sets = settings if isinstance(settings, list) else [settings] * len(convs)
        fields = [{"backend": self.name, "model": self.model, "op": op, "messages": c, **self.key_fields, **st}
                  for c, st in zip(convs, sets)]
        calls = [CallCache.canonical(f) for f in fields]
        keys = [hashlib.sha256(c.encode()).hexdigest() for c in calls]  # = CallCache.key(fields[i])
        out = self.cache.get_many(keys)
        first: dict[str, int] = {}
        for i, v in enumerate(out):
            if v is None:
                first.setdefault(keys[i], i)
        todo = list(first.values())
        if not todo:
            return out
        bar = tqdm(total=len(todo), desc=f"{self.model} {op}", unit="call", leave=False, mininterval=2,
                   disable=not self.progress or len(todo) < self.progress_min)
        done: dict[str, Any] = {}
        try:
            for j, v in compute([convs[i] for i in todo], [sets[i] for i in todo]):
                i = todo[j]
                done[keys[i]] = v
                self.cache.put_canonical(keys[i], calls[i], v)
                bar.update()
        finally:
            bar.close()
            self.cache.flush()
        if len(done) != len(todo):
            raise LLMError(f"{self.describe()} {op}: the backend gave {len(done)} results for {len(todo)} calls")
        return [done[k] if v is None else v for k, v in zip(keys, out)]

    def generate(self, convs: list[Messages], max_new_tokens: int = 60) -> list[str]:
        return self._cached("generate", convs, {"max_new_tokens": max_new_tokens},
                            lambda cs, _: self._generate(cs, max_new_tokens))

    def yes_probability(self, convs: list[Messages]) -> np.ndarray:
        """[n] P(yes) per conversation (module docstring); sets `last_answer_mass` [n]."""
        vals = self._cached("yes_no", convs, {}, lambda cs, _: self._yes_probability(cs))
        self.last_answer_mass = np.array([v[1] for v in vals], dtype=float)
        return np.array([v[0] for v in vals], dtype=float)

    def numbered_yes_no(self, convs: list[Messages], n_answers: list[int]) -> list[dict]:
        """For each conversation asking for `n_answers[i]` numbered Yes/No lines, the parsed reply
        (`parse_numbered_answers`): {"answers": [[P(yes), mass]] * n, "text"} or {"malformed": why, "text"}."""
        if len(n_answers) != len(convs) or any(int(n) < 1 for n in n_answers):
            raise ValueError(f"n_answers {list(n_answers)[:8]}…: need one count >= 1 per conversation "
                             f"({len(convs)} conversations)")
        sets = [{"n_answers": int(n), "max_tokens": numbered_max_tokens(int(n))} for n in n_answers]
        return self._cached("yes_no_numbered", convs, sets,
                            lambda cs, st: self._numbered(cs, [s["n_answers"] for s in st]))

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> Iterable[tuple[int, str]]:
        raise NotImplementedError

    def _yes_probability(self, convs: list[Messages]) -> Iterable[tuple[int, tuple[float, float]]]:
        raise NotImplementedError

    def _numbered(self, convs: list[Messages], ns: list[int]) -> Iterable[tuple[int, dict]]:
        raise NotImplementedError


class HFLocal(Backend):
    """A transformers chat model on this machine (`models.load_model(spec)`, variant `trained`)."""

    name = "hf-local"

    def __init__(self, model: str = "smollm2-135m", dtype: str = "auto", batch_size: int = 16,
                 device: str = "cpu", cache: CallCache | None = None, top_logprobs: int = 20, progress: bool = True):
        from ..machine import resolve_dtype

        super().__init__(model, cache, progress)
        dtype = resolve_dtype(dtype, device)  # auto: bf16 where the CPU has bf16 instructions, else fp32
        self.dtype, self.batch_size, self.device, self.top_logprobs = dtype, batch_size, device, top_logprobs
        self.key_fields = {"dtype": dtype}  # a bf16 and an fp32 forward answer differently
        self._lm = None

    @property
    def lm(self):
        if self._lm is None:
            from ..models import load_model
            from .examples import piece_table

            self._lm = load_model(self.model, "trained", device=self.device, dtype=self.dtype)
            self._pieces = piece_table(self._lm.tokenizer)
            words = [_answer_word(t) for t in self._pieces]
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

    def _left_padded(self, convs: list[Messages]):
        """Batches of (indices, ids [b, w], mask [b, w], pad id), similar lengths together, left-padded."""
        import torch

        tok = self.lm.tokenizer
        seqs = [self._ids(c) for c in convs]
        order = np.argsort([len(s) for s in seqs])
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, width - len(seqs[i]):] = torch.tensor(seqs[i])
                mask[r, width - len(seqs[i]):] = 1
            yield idx, ids, mask, pad

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> Iterator[tuple[int, str]]:
        """Greedy replies, `batch_size` conversations per `generate` call (left-padded, similar lengths
        together), each stopped at its first line break or end-of-turn."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        for idx, ids, mask, pad in self._left_padded(convs):
            with torch.no_grad():
                gen = model.generate(ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad, stop_strings=["\n"],
                                     tokenizer=tok)
            for r, i in enumerate(idx):
                yield int(i), tok.decode(gen[r, ids.shape[1]:], skip_special_tokens=True).strip()

    def _yes_probability(self, convs: list[Messages]) -> Iterator[tuple[int, tuple[float, float]]]:
        """Right-padded batches (causal attention: padding after a row's last token cannot change it);
        the LM head is applied only at each row's last position."""
        import torch

        model = self.lm.model
        seqs = [self._ids(c) for c in convs]
        order = np.argsort([len(s) for s in seqs])  # similar lengths per batch: little padding
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
                yield int(i), (float(p_yes[r]) / mass if mass > 0 else 0.5, mass)

    def _numbered(self, convs: list[Messages], ns: list[int]) -> Iterator[tuple[int, dict]]:
        """Greedy multi-line replies with each generated token's `top_logprobs` most likely tokens, put in
        the chat-completions reply shape and parsed by `parse_numbered_answers`."""
        import torch

        tok, model = self.lm.tokenizer, self.lm.model
        stop = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
        for idx, ids, mask, pad in self._left_padded(convs):
            with torch.no_grad():
                gen = model.generate(ids.to(self.device), attention_mask=mask.to(self.device), do_sample=False,
                                     max_new_tokens=numbered_max_tokens(max(ns[i] for i in idx)), pad_token_id=pad,
                                     output_logits=True, return_dict_in_generate=True)
            logp = torch.log_softmax(torch.stack(gen.logits, 1).float(), -1).cpu()  # [b, steps, vocab]
            top_v, top_i = logp.topk(self.top_logprobs, -1)
            new = gen.sequences[:, ids.shape[1]:].cpu()
            for r, i in enumerate(idx):
                content = []
                for t in range(new.shape[1]):
                    tid = int(new[r, t])
                    if tid in stop:
                        break
                    content.append({"token": self._pieces[tid], "logprob": float(logp[r, t, tid]),
                                    "top_logprobs": [{"token": self._pieces[int(a)], "logprob": float(b)}
                                                     for a, b in zip(top_i[r, t], top_v[r, t])]})
                text = "".join(c["token"] for c in content)
                reply = {"choices": [{"message": {"content": text}, "logprobs": {"content": content}}]}
                yield int(i), parse_numbered_answers(reply, ns[i])


class OpenAICompatible(Backend):
    """A chat-completions endpoint: POST `{base_url}/chat/completions`, key from `$api_key_env`, up to
    `max_concurrency` requests in flight (module docstring)."""

    name = "openai-compatible"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", max_retries: int = 5,
                 backoff_s: float = 1.0, timeout_s: float = 120.0, top_logprobs: int = 20,
                 cache: CallCache | None = None, max_concurrency: int = 32, progress: bool = True):
        super().__init__(model, cache, progress)
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency!r}: need an integer >= 1 (1 = one request at a time)")
        self.base_url = base_url.rstrip("/")
        self.api_key_env, self.max_retries, self.backoff_s = api_key_env, max_retries, backoff_s
        self.timeout_s, self.top_logprobs, self.max_concurrency = timeout_s, top_logprobs, max_concurrency

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
                last = f"HTTP {e.code}: {e.read()[:300].decode(errors='replace')}"
                if e.code != 429 and e.code < 500:
                    raise LLMError(f"{self.base_url} refused the request ({last}); check model "
                                   f"{self.model!r} and ${self.api_key_env}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as e:
                last = repr(e)
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2 ** attempt)
        raise LLMError(f"{self.base_url}: no answer after {self.max_retries + 1} tries; last error {last}")

    def _call(self, i: int, body: dict, parse: Callable[[int, dict], Any]) -> Any:
        reply = self._post(body)
        try:
            return parse(i, reply)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as e:
            raise LLMError(f"{self.base_url}: unusable reply {json.dumps(reply)[:300]} ({e!r})") from None

    def _requests(self, bodies: list[dict], parse: Callable[[int, dict], Any]) -> Iterator[tuple[int, Any]]:
        """(index, parse(index, reply)) for every request body, as the replies arrive, with up to
        `max_concurrency` in flight. On a failure for good: the unsent requests are cancelled, the ones in
        flight are awaited (and yielded, so the caller caches them), then one LLMError is raised."""
        if self.max_concurrency == 1 or len(bodies) <= 1:
            for i, b in enumerate(bodies):
                yield i, self._call(i, b, parse)
            return
        workers = min(self.max_concurrency, len(bodies))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-http")
        todo = iter(enumerate(bodies))
        live: dict[Future, int] = {}  # submitted, not yet collected: at most 2 x workers (the rest wait here)
        errors: list[BaseException] = []
        n_done = n_sent = 0
        try:
            while True:
                while not errors and len(live) < 2 * workers and (nxt := next(todo, None)) is not None:
                    live[pool.submit(self._call, nxt[0], nxt[1], parse)] = nxt[0]
                    n_sent += 1
                if not live:
                    break
                finished, _ = wait(live, return_when=FIRST_COMPLETED)
                for f in finished:
                    i = live.pop(f)
                    if f.cancelled():
                        n_sent -= 1
                        continue
                    e = f.exception()
                    if e is not None:
                        if not errors:
                            for g in live:
                                g.cancel()  # only those still queued: the running ones finish
                        errors.append(e)
                        continue
                    n_done += 1
                    yield i, f.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            if not isinstance(errors[0], LLMError):
                raise errors[0]
            raise LLMError(f"{errors[0]} [{len(errors)} of {len(bodies)} requests failed; {n_done} finished and "
                           f"are cached; {len(bodies) - n_sent} were not sent]")

    def _generate(self, convs: list[Messages], max_new_tokens: int) -> Iterator[tuple[int, str]]:
        bodies = [{"model": self.model, "messages": c, "max_tokens": max_new_tokens, "temperature": 0} for c in convs]
        return self._requests(bodies, lambda _, r: r["choices"][0]["message"]["content"].strip())

    def _yes_probability(self, convs: list[Messages]) -> Iterator[tuple[int, tuple[float, float]]]:
        bodies = [{"model": self.model, "messages": c, "max_tokens": 1, "temperature": 0,
                   "logprobs": True, "top_logprobs": self.top_logprobs} for c in convs]
        return self._requests(bodies, lambda _, r: parse_yes_no(r))

    def _numbered(self, convs: list[Messages], ns: list[int]) -> Iterator[tuple[int, dict]]:
        bodies = [{"model": self.model, "messages": c, "max_tokens": numbered_max_tokens(n), "temperature": 0,
                   "logprobs": True, "top_logprobs": self.top_logprobs} for c, n in zip(convs, ns)]
        return self._requests(bodies, lambda i, r: parse_numbered_answers(r, ns[i]))


def _yes_no_from_top(entry: dict, word: Callable[[str], str] = _answer_word) -> tuple[float, float] | None:
    """(P(yes), mass) from one generated token's `top_logprobs` (the token itself if there are none),
    tokens read by `word`; None when no listed token reads yes or no."""
    top = entry.get("top_logprobs") or [{"token": entry["token"], "logprob": entry["logprob"]}]
    p = {"yes": 0.0, "no": 0.0}
    for t in top:
        w = word(t["token"])
        if w in p:
            p[w] += math.exp(t["logprob"])
    mass = p["yes"] + p["no"]
    return (p["yes"] / mass, mass) if mass > 0 else None


def parse_yes_no(reply: dict) -> tuple[float, float]:
    """(P(yes), mass on yes/no) from a chat-completions reply's first-token `top_logprobs`; when the
    server sent no log-probs, the answer text alone (1 / 0, mass 0 to flag it)."""
    choice = reply["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        got = _yes_no_from_top(content[0])
        if got is not None:
            return got
    word = _answer_word((choice.get("message") or {}).get("content") or "")
    return (1.0 if word.startswith("yes") else 0.0 if word.startswith("no") else 0.5), 0.0


# one answer line: optional "Excerpt", the number, a separator (: . ) -), optional bold marks, yes/no
_ANSWER_LINE = re.compile(r"^[ \t*]*(?:excerpt[ \t]*)?(\d+)[ \t]*[:.)\-][ \t*]*(yes|no)\b",
                          re.IGNORECASE | re.MULTILINE)


def parse_numbered_answers(reply: dict, n: int) -> dict:
    """The n numbered Yes/No answers of a chat-completions reply.

    The reply text is the concatenation of the generated tokens when the server sent per-token
    log-probs, else the message content. An answer is a line "k: Yes" / "k: No" (also "k." "k)" "k -",
    an optional "Excerpt" before k, any case; other lines are ignored). The reply is well-formed iff
    every k in 1..n is answered exactly once and no other number is; then answer k scores
      * with log-probs: P(yes) = the module formula over the `top_logprobs` of the token covering the
        first letter of answer k's word, mass = the yes + no probability there (tokens read as words
        after stripping white space and the punctuation . , : ; ! * ) - around them, so ": Yes" counts);
      * without log-probs, or if no yes/no token is listed there: 1.0 for Yes, 0.0 for No, mass 0.
    Returns {"answers": [[P(yes), mass], …] (n, in order), "text"} or, if malformed,
    {"malformed": the reason, "text"}."""
    choice = reply["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        starts, text = [], ""
        for c in content:
            starts.append(len(text))
            text += c["token"]
    else:
        text = (choice.get("message") or {}).get("content") or ""
    answers: dict[int, tuple[str, int]] = {}
    for m in _ANSWER_LINE.finditer(text):
        k = int(m.group(1))
        if not 1 <= k <= n:
            return {"malformed": f"answer for excerpt {k}, outside 1..{n}", "text": text}
        if k in answers:
            return {"malformed": f"excerpt {k} answered twice", "text": text}
        answers[k] = (m.group(2).lower(), m.start(2))
    missing = [k for k in range(1, n + 1) if k not in answers]
    if missing:
        return {"malformed": f"no answer for excerpt(s) {missing} of 1..{n}", "text": text}
    out = []
    for k in range(1, n + 1):
        word, pos = answers[k]
        got = _yes_no_from_top(content[bisect.bisect_right(starts, pos) - 1], _numbered_word) if content else None
        out.append(list(got) if got is not None else [1.0 if word == "yes" else 0.0, 0.0])
    return {"answers": out, "text": text}


def make_backend(backend: str, model: str, *, api_base: str = "", api_key_env: str = "OPENAI_API_KEY",
                 dtype: str = "auto", device: str = "cpu", cache: CallCache | None = None,
                 max_concurrency: int = 32) -> Backend:
    """The backend named by a notebook's parameters (`llm_backend`, `llm_model`, `api_base`, …);
    `max_concurrency` (requests in flight) applies to openai-compatible only."""
    if backend == "hf-local":
        return HFLocal(model, dtype=dtype, device=device, cache=cache)
    if backend == "openai-compatible":
        if not api_base:
            raise LLMError("llm_backend 'openai-compatible' needs api_base, e.g. 'http://localhost:8000/v1'")
        return OpenAICompatible(model, api_base, api_key_env, cache=cache, max_concurrency=max_concurrency)
    raise LLMError(f"llm_backend {backend!r}; valid: {list(BACKENDS)}")
