"""Auto-interp at scale: requests in flight, the SQLite call cache, numbered multi-example prompts, and
the pipeline handing the backend lists across latents. All against a chat-completions server on
127.0.0.1 that answers deterministically from the excerpt text, so every path can be compared."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from saesanity.autointerp import examples as E
from saesanity.autointerp import explainers, pipeline, prompts, scorers
from saesanity.autointerp.llm import CallCache, LLMError, OpenAICompatible, parse_numbered_answers

LIB = str(Path(__file__).resolve().parents[1] / "lib")


def p_of(text: str) -> float:
    """The fake scorer's P(yes) of an excerpt: a fixed function of its text, in (0.05, 0.95)."""
    return 0.05 + 0.9 * int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2 ** 32


def _answer_top(p: float, lead: str = "") -> list[dict]:
    return [{"token": f"{lead}Yes", "logprob": math.log(0.9 * p)},
            {"token": f"{lead}No", "logprob": math.log(0.9 * (1 - p))},
            {"token": f"{lead}Maybe", "logprob": math.log(0.1)}]


class FakeServer:
    """Chat completions on 127.0.0.1.

    * `max_tokens == 1` with log-probs: the single-excerpt yes/no answer for the user message's
      "Excerpt: …" line, P(yes) = `p_of(text)`;
    * `max_tokens > 1` with log-probs: one "k: Yes|No" line per "Excerpt k: …" line, the answer token
      carrying P(yes) = `p_of(text k)` — so a numbered prompt scores exactly like single prompts;
      `malformed(texts)` true drops the last line; `logprobs=False` sends the text only;
    * no log-probs asked: an explanation made from a hash of the prompt.
    `status(body, attempt)` may return an HTTP error status for a request (attempt counts from 0 per
    distinct body). Counts requests and the most in flight at once."""

    def __init__(self, delay_s: float = 0.0, status=None, malformed=None, logprobs: bool = True):
        self.requests: list[dict] = []
        self.inflight = self.max_inflight = 0
        self.attempts: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                with outer.lock:
                    outer.requests.append(body)
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                    h = hashlib.sha256(raw).hexdigest()
                    attempt = outer.attempts.get(h, 0)
                    outer.attempts[h] = attempt + 1
                try:
                    time.sleep(delay_s)
                    code = status(body, attempt) if status else None
                    answer = (code, {"error": f"test server says {code}"}) if code else \
                        (200, outer.reply(body, malformed, logprobs))
                finally:
                    # out of flight before the answer leaves: a client that got its answer and sent the next
                    # request must not be counted twice (CI once saw 9 in flight under max_concurrency=8)
                    with outer.lock:
                        outer.inflight -= 1
                self._send(*answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def reply(body: dict, malformed, logprobs: bool) -> dict:
        user = body["messages"][-1]["content"]
        if not body.get("logprobs"):
            kind = hashlib.sha256(user.encode()).hexdigest()[:6]
            return {"choices": [{"message": {"content": f"Words of kind {kind}"}}]}
        if body["max_tokens"] == 1:
            p = p_of(re.search(r"^Excerpt: (.*)$", user, re.M).group(1))
            top = _answer_top(p)
            tok = top[0] if p >= 0.5 else top[1]
            return {"choices": [{"message": {"content": tok["token"]},
                                 "logprobs": {"content": [{**tok, "top_logprobs": top}]}}]}
        texts = [m.group(2) for m in re.finditer(r"^Excerpt (\d+): (.*)$", user, re.M)]
        content = []
        shown = texts[:-1] if malformed and malformed(texts) else texts
        for k, t in enumerate(shown, 1):
            top = _answer_top(p_of(t), " ")
            tok = top[0] if p_of(t) >= 0.5 else top[1]
            content += [{"token": str(k), "logprob": 0.0}, {"token": ":", "logprob": 0.0},
                        {**tok, "top_logprobs": top}] + ([{"token": "\n", "logprob": 0.0}] if k < len(shown) else [])
        text = "".join(c["token"] for c in content)
        return {"choices": [{"message": {"content": text}, **({"logprobs": {"content": content}} if logprobs else {})}]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_project_cache(tmp_path, monkeypatch):
    """Whatever a test forgets to pass, nothing lands in the project's cache."""
    monkeypatch.setenv("SAESANITY_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def serve():
    made = []

    def make(**kw) -> FakeServer:
        made.append(FakeServer(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _convs(n: int, tag: str = "t") -> tuple[list, list[str]]:
    texts = [f"{tag} excerpt number {i} about cats" for i in range(n)]
    return [prompts.detection("cats", t) for t in texts], texts


def _expected(texts):
    return np.array([0.9 * p_of(t) / (0.9 * p_of(t) + 0.9 * (1 - p_of(t))) for t in texts])


# ---------------------------------------------------------------- requests in flight

def test_concurrent_results_are_in_order_and_equal_the_sequential_path(serve, tmp_path):
    s = serve(delay_s=0.05)  # each answer takes 50 ms: requests sent together overlap at the server
    convs, texts = _convs(24)
    conc = OpenAICompatible("m", s.url, max_concurrency=8, cache=CallCache(tmp_path / "a"), progress=False)
    p = conc.yes_probability(convs)
    assert 4 <= s.max_inflight <= 8, s.max_inflight  # the server saw requests overlapping, never more than 8
    np.testing.assert_allclose(p, _expected(texts), rtol=1e-12)  # each answer in its conversation's place
    s.max_inflight = 0
    seq = OpenAICompatible("m", s.url, max_concurrency=1, cache=CallCache(tmp_path / "b"), progress=False)
    q = seq.yes_probability(convs)
    assert s.max_inflight == 1 and len(s.requests) == 48
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(conc.last_answer_mass, seq.last_answer_mass)
    gconvs = [prompts.explain([f"<<w{i}>>"]) for i in range(20)]
    assert conc.generate(gconvs) == seq.generate(gconvs)  # replies differ per prompt: order is checked
    assert len(set(conc.generate(gconvs))) == 20


def test_a_500_on_one_request_is_retried(serve, tmp_path):
    convs, texts = _convs(12)
    s = serve(status=lambda body, attempt: 500 if texts[5] in body["messages"][-1]["content"] and attempt < 2 else None)
    b = OpenAICompatible("m", s.url, max_concurrency=6, backoff_s=0.01, cache=CallCache(tmp_path), progress=False)
    np.testing.assert_allclose(b.yes_probability(convs), _expected(texts), rtol=1e-12)
    assert len(s.requests) == 14  # 12 + two retries of the one that failed


def test_a_400_fails_with_the_servers_message_and_the_rest_stay_cached(serve, tmp_path):
    convs, texts = _convs(10)
    seen = {}

    def bad(body, attempt):  # the bad request is refused once all ten have been sent
        if texts[3] not in body["messages"][-1]["content"]:
            return None
        deadline = time.time() + 10
        while len(seen["server"].requests) < 10 and time.time() < deadline:
            time.sleep(0.005)
        return 400

    s = seen["server"] = serve(status=bad)
    b = OpenAICompatible("m", s.url, max_concurrency=16, backoff_s=0.01, cache=CallCache(tmp_path), progress=False)
    with pytest.raises(LLMError, match=r'refused the request \(HTTP 400: \{"error": "test server says 400"\}\)') as err:
        b.yes_probability(convs)
    assert "1 of 10 requests failed; 9 finished and are cached" in str(err.value)
    assert len(s.requests) == 10  # a 400 is not retried
    again = OpenAICompatible("m", s.url, cache=CallCache(tmp_path), progress=False)
    good = [c for i, c in enumerate(convs) if i != 3]
    np.testing.assert_allclose(again.yes_probability(good), _expected(texts[:3] + texts[4:]), rtol=1e-12)
    assert len(s.requests) == 10 and again.cache.hits == 9  # nothing sent: all from the database


def test_a_failure_for_good_stops_sending_the_rest(serve, tmp_path):
    convs, texts = _convs(60)
    s = serve(status=lambda body, attempt: 400 if texts[0] in body["messages"][-1]["content"] else None,
              delay_s=0.01)
    b = OpenAICompatible("m", s.url, max_concurrency=2, cache=CallCache(tmp_path), progress=False)
    with pytest.raises(LLMError, match=r"1 of 60 requests failed.* were not sent"):
        b.yes_probability(convs)
    assert len(s.requests) < 30


def test_bad_concurrency_is_rejected():
    with pytest.raises(ValueError, match=r"max_concurrency=0: need an integer >= 1"):
        OpenAICompatible("m", "http://127.0.0.1:9/v1", max_concurrency=0)
    with pytest.raises(ValueError, match=r"llm_concurrency=0"):
        pipeline.InterpConfig(llm_concurrency=0).check()
    with pytest.raises(ValueError, match=r"examples_per_prompt=0"):
        pipeline.InterpConfig(examples_per_prompt=0).check()


def test_progress_bar_counts_requests_when_many(serve, tmp_path, capsys):
    s = serve()
    b = OpenAICompatible("bar-model", s.url, max_concurrency=4, cache=CallCache(tmp_path))
    b.progress_min = 5
    b.yes_probability(_convs(3)[0])
    assert "bar-model yes_no" not in capsys.readouterr().err  # few calls: no bar
    b.yes_probability(_convs(6, "u")[0])
    assert "bar-model yes_no" in capsys.readouterr().err
    la, win = _planted(2)
    cfg = pipeline.InterpConfig(explainer="top-tokens", scorers=("detection",), n_explain=8, n_score_act=6,
                                n_score_non=5, n_quantiles=4)
    pipeline.run(la, win, [0, 1], cfg, [f" w{i}" for i in range(500)], backend=b, progress=False)
    assert "bar-model" not in capsys.readouterr().err and b.progress  # silenced for the run only


# ---------------------------------------------------------------- the SQLite call cache

def test_cache_hits_misses_duplicates_and_a_second_run_sends_nothing(serve, tmp_path):
    c = CallCache(tmp_path)
    for i in range(3):
        c.put(f"k{i}", {"i": i}, [i, 0.5])
    assert c.get_many(["k0", "x", "k2", "k1", "y"]) == [[0, 0.5], None, [2, 0.5], [1, 0.5], None]
    assert (c.hits, c.misses) == (3, 2)
    c.flush()
    assert CallCache(tmp_path).count() == 3 and (tmp_path / "calls.sqlite").exists()
    row = sqlite3.connect(tmp_path / "calls.sqlite").execute("SELECT call, value FROM calls WHERE key='k1'").fetchone()
    assert json.loads(row[0]) == {"i": 1} and json.loads(row[1]) == [1, 0.5]

    s = serve()
    convs, texts = _convs(30)
    b = OpenAICompatible("m", s.url, max_concurrency=8, cache=CallCache(tmp_path / "run"), progress=False)
    first = b.yes_probability(convs + convs[:5])  # duplicates: one request each
    assert len(s.requests) == 30 and b.cache.misses == 35
    b2 = OpenAICompatible("m", s.url, max_concurrency=8, cache=CallCache(tmp_path / "run"), progress=False)
    np.testing.assert_array_equal(b2.yes_probability(convs + convs[:5]), first)
    assert len(s.requests) == 30 and (b2.cache.hits, b2.cache.misses) == (35, 0)
    # the key is the per-file layout's: SHA-256 of the call's canonical JSON
    fields = {"backend": "openai-compatible", "model": "m", "op": "yes_no", "messages": convs[0]}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False)
    assert CallCache.key(fields) == hashlib.sha256(canonical.encode()).hexdigest()
    assert b2.cache.get(CallCache.key(fields))[0] == pytest.approx(_expected(texts[:1])[0])


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {lib!r})
    from saesanity.autointerp.llm import CallCache
    root, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = CallCache(root, flush_every=int(sys.argv[4]), flush_s=0 if sys.argv[4] == "1" else 2)
    i = 0
    while n < 0 or i < n:
        c.put(f"{{tag}}-{{i}}", {{"tag": tag, "i": i}}, {{"tag": tag, "i": i}})
        i += 1
    c.flush()
""")


def _writer(root: Path, tag: str, n: int, flush_every: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _WRITER.format(lib=LIB), str(root), tag, str(n), str(flush_every)])


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    procs = [_writer(tmp_path, tag, 3000, 25) for tag in ("a", "b")]  # both create the database at once
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    db = sqlite3.connect(tmp_path / "calls.sqlite")
    rows = db.execute("SELECT key, value FROM calls").fetchall()
    assert len(rows) == 6000
    assert all(json.loads(v) == {"tag": k.split("-")[0], "i": int(k.split("-")[1])} for k, v in rows)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_killed_writer_leaves_a_readable_database(tmp_path):
    p = _writer(tmp_path, "k", -1, 1)  # commits every call, forever
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            time.sleep(0.2)
            try:
                if CallCache(tmp_path).count() >= 300:
                    break
            except (LLMError, sqlite3.Error):
                pass
    finally:
        p.kill()  # SIGKILL, mid-transaction at any point
        p.wait()
    c = CallCache(tmp_path)
    db = sqlite3.connect(tmp_path / "calls.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = c.count()
    assert n >= 300
    assert c.get_many([f"k-{i}" for i in range(n)]) == [{"tag": "k", "i": i} for i in range(n)]  # committed in order
    c.put("after", {}, 1)
    c.flush()
    assert CallCache(tmp_path).get("after") == 1  # and writable


def _legacy_file(root: Path, fields: dict, value) -> str:
    key = CallCache.key(fields)
    (root / key[:2]).mkdir(parents=True, exist_ok=True)
    (root / key[:2] / f"{key}.json").write_text(json.dumps({"call": fields, "value": value}))
    return key


def test_per_file_caches_are_read_and_migrated(serve, tmp_path):
    s = serve()
    convs, texts = _convs(4)
    legacy = tmp_path / "old"
    keys = [_legacy_file(legacy, {"backend": "openai-compatible", "model": "m", "op": "yes_no", "messages": c},
                         [0.25, 0.5]) for c in convs[:3]]
    b = OpenAICompatible("m", s.url, cache=CallCache(legacy), progress=False)
    p = b.yes_probability(convs)
    assert p.tolist()[:3] == [0.25] * 3 and len(s.requests) == 1 and b.cache.hits == 3  # the old files answer
    for k in keys:
        (legacy / k[:2] / f"{k}.json").unlink()
    assert CallCache(legacy).get_many(keys) == [[0.25, 0.5]] * 3  # copied into the database on the hit
    other = tmp_path / "bulk"
    keys = [_legacy_file(other, {"i": i}, i) for i in range(50)]
    (other / "zz").mkdir()
    (other / "zz" / "broken.json").write_text("{not json")
    c = CallCache(other, flush_every=7)
    assert c.migrate_files(delete=True) == 50
    assert not any(other.glob("[0-9a-f][0-9a-f]/*.json")) and (other / "zz" / "broken.json").exists()
    fresh = CallCache(other, legacy=False)
    assert fresh.get_many(keys) == list(range(50))
    assert json.loads(sqlite3.connect(other / "calls.sqlite").execute(
        "SELECT call FROM calls WHERE key=?", (keys[7],)).fetchone()[0]) == {"i": 7}


# ---------------------------------------------------------------- numbered multi-example prompts

def _text_reply(text: str) -> dict:
    return {"choices": [{"message": {"content": text}}]}


def test_parse_numbered_answers_well_formed():
    got = parse_numbered_answers(_text_reply("Here you go:\n1: Yes\n2. no\n**3:** YES\nExcerpt 4) No\n"), 4)
    assert got["answers"] == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    # with log-probs: the answer token's top_logprobs, normalised over yes/no; a merged ": Yes" token works
    toks = [{"token": "1", "logprob": 0}, {"token": ": Yes", "logprob": math.log(0.5),
                                            "top_logprobs": [{"token": ": Yes", "logprob": math.log(0.5)},
                                                             {"token": ": No", "logprob": math.log(0.3)}]},
            {"token": "\n", "logprob": 0}, {"token": "2", "logprob": 0}, {"token": ":", "logprob": 0},
            {"token": " No", "logprob": math.log(0.6), "top_logprobs": [{"token": " No", "logprob": math.log(0.6)},
                                                                         {"token": "Maybe", "logprob": math.log(0.4)}]},
            {"token": "\n", "logprob": 0}, {"token": "3", "logprob": 0}, {"token": ":", "logprob": 0},
            {"token": " Yes", "logprob": math.log(0.9), "top_logprobs": [{"token": " Sure", "logprob": math.log(0.9)}]}]
    reply = {"choices": [{"message": {"content": "ignored when tokens are given"}, "logprobs": {"content": toks}}]}
    got = parse_numbered_answers(reply, 3)
    assert got["text"] == "1: Yes\n2: No\n3: Yes"
    (p1, m1), (p2, m2), (p3, m3) = got["answers"]
    assert p1 == pytest.approx(0.5 / 0.8) and m1 == pytest.approx(0.8)
    assert p2 == 0.0 and m2 == pytest.approx(0.6)
    assert (p3, m3) == (1.0, 0.0)  # no yes/no token listed at the answer: the text, mass 0


@pytest.mark.parametrize("text, why", [
    ("1: Yes\n2: No", r"no answer for excerpt\(s\) \[3\]"),
    ("1: Yes\n2: No\n2: Yes\n3: No", "excerpt 2 answered twice"),
    ("1: Yes\n2: No\n3: No\n4: Yes", "excerpt 4, outside 1..3"),
    ("Yes\nNo\nYes", r"no answer for excerpt\(s\) \[1, 2, 3\]"),
    ("", r"\[1, 2, 3\]"),
    ("1: Maybe\n2: No\n3: No", r"\[1\]"),
])
def test_parse_numbered_answers_malformed(text, why):
    got = parse_numbered_answers(_text_reply(text), 3)
    assert "answers" not in got and re.search(why, got["malformed"]) and got["text"] == text


def _latent_examples(latent: int, n_act: int = 7, n_non: int = 6, ctx: int = 6) -> E.LatentExamples:
    rng = np.random.default_rng(latent)
    mk = lambda w, a: E.Example(w, rng.integers(0, 50, ctx), np.asarray(a, np.float32))  # noqa: E731
    act = [mk(w, rng.random(ctx) * (rng.random(ctx) > 0.5)) for w in range(n_act)]
    for e in act:
        e.acts[0] = max(e.acts.max(), 0.1)
    return E.LatentExamples(latent, [], act, [mk(100 + w, np.zeros(ctx)) for w in range(n_non)], n_act)


PIECES = [f" w{i}" for i in range(50)]


def test_numbered_prompts_score_like_single_prompts(serve, tmp_path):
    s = serve()
    exs = [_latent_examples(f) for f in (3, 8)]
    jobs = [scorers.chat_job(name, f"expl {ex.latent}", ex, PIECES, 0.3, 0) for ex in exs
            for name in ("detection", "fuzzing")]
    one = OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "one"), progress=False)
    ref = scorers.score_chat(one, jobs, 1)
    assert len(s.requests) == 4 * 13
    many = OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "many"), progress=False)
    got = scorers.score_chat(many, jobs, 4)
    assert len(s.requests) == 4 * 13 + 4 * 4  # 13 excerpts -> groups of 4, 3, 3, 3
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r.labels, g.labels)
        np.testing.assert_array_equal(r.scores, g.scores)
        np.testing.assert_array_equal(r.mass, g.mass)
        assert g.n_fallback == 0 and np.all(g.mass > 0)
    sizes = sorted(len(re.findall(r"^Excerpt \d+: ", b["messages"][-1]["content"], re.M)) for b in s.requests[52:])
    assert sizes == [3] * 12 + [4] * 4
    # the groups mix positives and negatives (shuffled), and the same job always gets the same groups
    groups = scorers.prompt_groups(13, 4, 0, 3, "detection")
    assert any(0 < (g < 7).sum() < len(g) for g in groups)
    assert [g.tolist() for g in groups] == [g.tolist() for g in scorers.prompt_groups(13, 4, 0, 3, "detection")]
    assert sorted(np.concatenate(groups).tolist()) == list(range(13))


def test_malformed_numbered_replies_fall_back_to_single_prompts(serve, tmp_path):
    bad = lambda texts: p_of(texts[0]) < 0.5  # noqa: E731
    s = serve(malformed=bad)
    exs = [_latent_examples(f) for f in (1, 2, 5)]
    jobs = [scorers.chat_job("detection", "expl", ex, PIECES) for ex in exs]
    ref = scorers.score_chat(OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "one"), progress=False), jobs, 1)
    n_ref = len(s.requests)
    b = OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "many"), progress=False)
    got = scorers.score_chat(b, jobs, 5)
    n_fb = sum(g.n_fallback for g in got)
    assert 0 < n_fb < 39
    assert len(s.requests) - n_ref == 3 * 3 + n_fb  # 13 -> 3 numbered prompts per job, then one per rescored excerpt
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r.scores, g.scores)
    again = OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "many"), progress=False)
    scorers.score_chat(again, jobs, 5)
    assert len(s.requests) - n_ref == 3 * 3 + n_fb  # malformed replies are cached too: nothing resent


def test_numbered_replies_without_logprobs_read_the_text(serve, tmp_path):
    s = serve(logprobs=False)
    ex = _latent_examples(4)
    [g] = scorers.score_chat(OpenAICompatible("m", s.url, cache=CallCache(tmp_path), progress=False),
                             [scorers.chat_job("fuzzing", "e", ex, PIECES)], 13)
    texts = scorers.fuzzing_texts(ex, PIECES)
    assert len(s.requests) == 1 and g.n_fallback == 0
    np.testing.assert_array_equal(g.scores, [1.0 if p_of(t) >= 0.5 else 0.0 for t in texts])
    np.testing.assert_array_equal(g.mass, np.zeros(13))


# ---------------------------------------------------------------- the pipeline gives the backend whole lists

class _Recording(OpenAICompatible):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.lists: list[tuple[str, int]] = []

    def generate(self, convs, max_new_tokens=60):
        self.lists.append(("generate", len(convs)))
        return super().generate(convs, max_new_tokens)

    def yes_probability(self, convs):
        self.lists.append(("yes_no", len(convs)))
        return super().yes_probability(convs)

    def numbered_yes_no(self, convs, n_answers):
        self.lists.append(("numbered", len(convs)))
        return super().numbered_yes_no(convs, n_answers)


def _planted(n_latents=5, n_seq=30, seq_len=65, ctx=8):
    toks = np.arange(n_seq * seq_len).reshape(n_seq, seq_len) % 500
    win = E.Windows(toks, 1, ctx, n_seq * (seq_len - 1))
    rng = np.random.default_rng(0)
    rows, cols, vals = [], [], []
    for f in range(n_latents):
        for i, w in enumerate(rng.choice(win.n_windows, 30, replace=False)):
            seq, j = divmod(int(w), win.per_seq_windows)
            base = seq * win.per_seq + j * ctx
            rows += [base + 1 + f % 5, base + 6]
            cols += [f, f]
            vals += [1.0 + i, 0.2 + 0.1 * i]
    order = np.lexsort((np.array(rows), np.array(cols)))
    la = E.LatentActs.from_triples(np.array(rows)[order], np.array(cols)[order], np.array(vals, np.float32)[order],
                                   n_latents, win.n_rows)
    return la, win


def test_pipeline_sends_lists_across_latents_with_the_records_of_one_latent_at_a_time(serve, tmp_path):
    s = serve()
    la, win = _planted()
    pieces = [f" w{i}" for i in range(500)]
    cfg = pipeline.InterpConfig(explainer="llm", llm_backend="openai-compatible", scorers=("detection", "fuzzing"),
                                n_explain=8, n_score_act=6, n_score_non=5, n_quantiles=4)
    b = _Recording("m", s.url, cache=CallCache(tmp_path / "p"), progress=False)
    recs = pipeline.run(la, win, [0, 1, 2, 3, 4], cfg, pieces, backend=b, progress=False)
    assert b.lists == [("generate", 5), ("yes_no", 5 * 2 * 11)]  # one list per operation for all five latents
    # reference: one latent at a time through the per-latent scorer functions, on a fresh cache
    ref = OpenAICompatible("m", s.url, cache=CallCache(tmp_path / "r"), max_concurrency=1, progress=False)
    for rec, f in zip(recs, range(5)):
        ex = E.sample_examples(la, win, f, n_explain=8, n_score_act=6, n_score_non=5, n_quantiles=4, seed=0)
        [expl] = explainers.explain_llm(ref, [ex], pieces, 40)
        assert rec["explanation"] == expl and rec["latent"] == f
        y, p = scorers.detection(ref, expl, ex, pieces)
        assert rec["detection"]["labels"] == y.tolist() and rec["detection"]["scores"] == np.round(p, 6).tolist()
        assert rec["detection"]["answer_mass"] == float(np.mean(ref.last_answer_mass))
        y, p = scorers.fuzzing(ref, expl, ex, pieces, 0.3, 0)
        assert rec["fuzzing"]["scores"] == np.round(p, 6).tolist() and "n_fallback" not in rec["fuzzing"]
    # numbered prompts: the fake server answers each excerpt as alone, so the records agree
    b4 = _Recording("m", s.url, cache=CallCache(tmp_path / "p4"), progress=False)
    recs4 = pipeline.run(la, win, [0, 1, 2, 3, 4], dataclasses.replace(cfg, examples_per_prompt=4), pieces,
                         backend=b4, progress=False)
    assert b4.lists == [("generate", 5), ("numbered", 5 * 2 * 3)]
    for r, r4 in zip(recs, recs4):
        for name in ("detection", "fuzzing"):
            assert r4[name]["scores"] == r[name]["scores"] and r4[name]["n_fallback"] == 0


class _Stop(Exception):
    pass


def test_records_cache_key_is_unchanged_by_the_new_settings(monkeypatch):
    seen = []

    def fake_cached(step, fields, compute, version):
        seen.append(fields)
        raise _Stop

    monkeypatch.setattr(pipeline, "cached", fake_cached)
    la, win = _planted(1)
    for cfg in (pipeline.InterpConfig(), pipeline.InterpConfig(llm_concurrency=4),
                pipeline.InterpConfig(examples_per_prompt=5)):
        with pytest.raises(_Stop):
            pipeline.score_latents({"sae": "t"}, la, win, [0], cfg, PIECES)
    assert seen[0] == seen[1] and seen[2]["cfg"]["examples_per_prompt"] == 5
    # the default configuration's key has exactly the fields keys had before these settings existed
    assert set(seen[0]["cfg"]) == {f.name for f in dataclasses.fields(pipeline.InterpConfig)} - {
        "llm_concurrency", "examples_per_prompt"}


# ---------------------------------------------------------------- hf-local keeps working, numbered prompts included

@pytest.mark.usefixtures("iso_cache")
def test_hf_local_numbered_prompts_parse_or_fall_back(tmp_path):
    from saesanity.autointerp.llm import HFLocal

    ex = _latent_examples(2, n_act=3, n_non=2)
    b = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=4, cache=CallCache(tmp_path / "a"), progress=False)
    replies = b.numbered_yes_no([prompts.detection_numbered("cats", ["a cat", "a dog"])], [2])
    assert set(replies[0]) in ({"answers", "text"}, {"malformed", "text"})
    pieces = [f" w{i}" for i in range(50)]
    [g] = scorers.score_chat(b, [scorers.chat_job("detection", "cats", ex, pieces)], 3)
    one = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=4, cache=CallCache(tmp_path / "b"), progress=False)
    [r] = scorers.score_chat(one, [scorers.chat_job("detection", "cats", ex, pieces)], 1)
    assert replies[0]["text"] and g.scores.shape == (5,)
    assert g.n_fallback == 5  # a random model does not follow the format: every excerpt rescored one per prompt
    np.testing.assert_allclose(g.scores, r.scores, atol=1e-5)
    np.testing.assert_allclose(g.mass, r.mass, atol=1e-7)


@pytest.mark.usefixtures("iso_cache")
def test_hf_local_pipeline_over_a_chunk_matches_one_latent_at_a_time(tmp_path):
    from saesanity.autointerp.llm import HFLocal

    la, win = _planted(3)
    pieces = [f" w{i}" for i in range(500)]
    cfg = pipeline.InterpConfig(explainer="llm", scorers=("detection", "fuzzing"), llm_model="smollm2-tiny-random",
                                llm_dtype="float32", n_explain=4, n_score_act=3, n_score_non=3, n_quantiles=2,
                                max_new_tokens=4)
    b = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=4, cache=CallCache(tmp_path / "a"), progress=False)
    recs = pipeline.run(la, win, [0, 1, 2], cfg, pieces, backend=b, progress=False)
    ref = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=4, cache=CallCache(tmp_path / "b"), progress=False)
    for rec, f in zip(recs, range(3)):
        ex = E.sample_examples(la, win, f, n_explain=4, n_score_act=3, n_score_non=3, n_quantiles=2, seed=0)
        [expl] = explainers.explain_llm(ref, [ex], pieces, 4)
        assert rec["explanation"] == expl
        _, p = scorers.detection(ref, expl, ex, pieces)
        np.testing.assert_allclose(rec["detection"]["scores"], p, atol=2e-5)  # float32, other batch mates
        _, p = scorers.fuzzing(ref, expl, ex, pieces, 0.3, 0)
        np.testing.assert_allclose(rec["fuzzing"]["scores"], p, atol=2e-5)
