"""Auto-interp pipeline: examples, prompts, backends (a local chat-completions server), scorers, ROC."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from saesanity.autointerp import examples as E
from saesanity.autointerp import pipeline, prompts, roc, scorers
from saesanity.autointerp.llm import CallCache, LLMError, OpenAICompatible, parse_yes_no


# ---------------------------------------------------------------- examples

def _windows(n_seq=6, seq_len=65, ctx=8, drop=1):
    toks = np.arange(n_seq * seq_len).reshape(n_seq, seq_len) % 500
    return E.Windows(toks, drop, ctx, n_seq * (seq_len - drop))


def test_window_tiling_maps_rows_to_tokens():
    win = _windows()
    assert win.per_seq == 64 and win.per_seq_windows == 8 and win.n_windows == 48
    rows = np.array([0, 7, 8, 64 + 9, 6 * 64 - 1])
    w, pos = win.window_of_rows(rows)
    assert w.tolist() == [0, 0, 1, 9, 47] and pos.tolist() == [0, 7, 0, 1, 7]
    # row r of sequence s is token position drop_first + (r mod per_seq) of that sequence
    assert win.window_tokens(9)[1] == win.tokens[1, 1 + 8 + 1]


def test_window_tiling_drops_partial_windows():
    toks = np.zeros((2, 21), dtype=int)  # per_seq 20, ctx 8: two windows per sequence, 4 rows unused
    win = E.Windows(toks, 1, 8, 40)
    w, _ = win.window_of_rows(np.array([15, 16, 19, 20, 35, 39]))
    assert w.tolist() == [1, -1, -1, 2, 3, -1]
    assert E.Windows(toks, 1, 8, 30).n_windows == 3  # the last sequence is only partly collected


def test_encode_sparse_matches_dense_encode():
    from saesanity.sae import TopKSAE

    torch.manual_seed(0)
    sae = TopKSAE(d_in=12, d_sae=40, k=4)
    acts = np.random.default_rng(0).normal(size=(300, 12)).astype(np.float32)
    la = E.encode_sparse(sae, acts, batch=64)
    dense = sae.encode(torch.from_numpy(acts)).detach().numpy()
    rebuilt = np.zeros_like(dense)
    for f in range(la.n_latents):
        r, v = la.of(f)
        assert np.all(np.diff(r) > 0)
        rebuilt[r, f] = v
    np.testing.assert_allclose(rebuilt, dense, rtol=1e-6)


def _planted_latent(win, n_active, seed=0):
    """A latent firing in `n_active` windows with max activation 1…n_active (window i has max i+1)."""
    rng = np.random.default_rng(seed)
    ws = rng.choice(win.n_windows, n_active, replace=False)
    rows, vals = [], []
    for i, w in enumerate(ws):
        seq, j = divmod(int(w), win.per_seq_windows)
        base = seq * win.per_seq + j * win.ctx_len
        rows += [base + 2, base + 5]
        vals += [i + 1.0, 0.2 * (i + 1.0)]
    la = E.LatentActs.from_triples(np.array(rows), np.zeros(len(rows), int), np.array(vals, np.float32), 1, win.n_rows)
    return la, set(int(w) for w in ws)


def test_sample_examples_quantiles_disjoint_and_quiet_negatives():
    win = _windows(n_seq=20)
    la, active = _planted_latent(win, 60)
    ex = E.sample_examples(la, win, 0, n_explain=20, n_score_act=10, n_score_non=10, n_quantiles=10, seed=1)
    ex_w = [e.window for e in ex.explain]
    sc_w = [e.window for e in ex.score_act]
    assert len(set(ex_w)) == 20 and len(set(sc_w)) == 10 and not set(ex_w) & set(sc_w)
    assert set(ex_w + sc_w) <= active and not {e.window for e in ex.score_non} & active
    # two explanation examples and one scoring example from each of the 10 quantile bins (maxima 1…60)
    bins = lambda es: np.bincount([(int(e.max_act) - 1) // 6 for e in es], minlength=10)  # noqa: E731
    assert bins(ex.explain).tolist() == [2] * 10 and bins(ex.score_act).tolist() == [1] * 10
    assert [e.max_act for e in ex.explain] == sorted((e.max_act for e in ex.explain), reverse=True)
    assert ex.explain[0].acts[2] == ex.explain[0].max_act and ex.explain[0].acts[5] == pytest.approx(0.2 * ex.explain[0].max_act)
    assert E.sample_examples(la, win, 0, n_explain=55, n_score_act=10, n_score_non=10) is None  # not eligible
    assert E.eligible_latents(la, win, 60).tolist() == [0] and E.eligible_latents(la, win, 61).size == 0


def test_rule_latents_fire_on_their_tokens():
    pieces = [" The", " the", ",", " 42", " cat", "Dog"]
    flat = np.array([0, 1, 2, 3, 4, 5, 1, 1])
    la, names = E.rule_acts(pieces, flat, ["word:the", "punct:,", "digit", "capitalised"], n_noise=1, noise_rate=0.5)
    assert names[:4] == ["word:the", "punct:,", "digit", "capitalised"] and names[4] == "noise 0"
    assert la.of(0)[0].tolist() == [0, 1, 6, 7] and la.of(1)[0].tolist() == [2]
    assert la.of(2)[0].tolist() == [3] and la.of(3)[0].tolist() == [0, 5]
    with pytest.raises(ValueError, match="valid: 'digit'"):
        E.rule_test("colour:red")


# ---------------------------------------------------------------- prompts and the fuzzing highlighter

def test_mark_wraps_runs_and_keeps_leading_space_outside():
    assert prompts.mark([" the", " cat", " sat", "."], [False, True, True, False]) == " the <<cat sat>>."
    assert prompts.mark(["a", "b"], [True, False]) == "<<a>>b"
    assert prompts.mark(["a", "\nb"], [False, True]) == "a <<b>>"


def _example_set(acts_rows, n_non=3, ctx=6):
    mk = lambda a, w: E.Example(w, np.arange(ctx), np.array(a, np.float32))  # noqa: E731
    return E.LatentExamples(7, [], [mk(a, i) for i, a in enumerate(acts_rows)],
                            [mk([0] * ctx, 100 + i) for i in range(n_non)], len(acts_rows))


def test_fuzz_marks_highlight_strong_tokens_and_random_negatives():
    ex = _example_set([[0, 1.0, 0.35, 0.25, 0, 0], [2.0, 0, 0, 0.7, 0.5, 0]])
    marks = scorers.fuzz_marks(ex, 0.3, seed=0)
    assert marks[0].tolist() == [False, True, True, False, False, False]  # 0.35 >= 0.3 x 1.0 > 0.25
    assert marks[1].tolist() == [True, False, False, True, False, False]  # 0.7 >= 0.6 > 0.5
    neg_counts = [int(m.sum()) for m in marks[2:]]
    assert neg_counts == [2, 2, 2]  # counts drawn from the positives' (2 and 2)
    assert [m.tolist() for m in scorers.fuzz_marks(ex, 0.3, seed=0)] == [m.tolist() for m in marks]


def test_balanced_accuracy_by_hand():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.6, 0.7, 0.1])
    assert scorers.balanced_accuracy(y, p) == pytest.approx((2 / 3 + 1 / 2) / 2)


# ---------------------------------------------------------------- ROC / AUROC

def test_pooled_and_per_latent_auroc_match_sklearn():
    rng = np.random.default_rng(0)
    results = [(rng.integers(0, 2, 30), rng.random(30)) for _ in range(4)] + [(np.ones(5, int), rng.random(5))]
    y = np.concatenate([r[0] for r in results])
    s = np.concatenate([r[1] for r in results])
    out = roc.pooled(y, s)
    fpr, tpr, _ = roc_curve(y, s)
    np.testing.assert_array_equal(out["fpr"], fpr)
    assert out["auroc"] == pytest.approx(roc_auc_score(y, s))
    per = roc.per_latent_auroc(results)
    np.testing.assert_allclose(per[:4], [roc_auc_score(a, b) for a, b in results[:4]])
    assert math.isnan(per[4])


def test_auroc_hand_computed():
    # positives {0.9, 0.4}, negatives {0.5, 0.1}: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) -> 3/4
    assert roc.pooled(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1]))["auroc"] == pytest.approx(0.75)


def test_tpr_on_grid_takes_the_upper_point_of_vertical_steps():
    fpr, tpr = np.array([0, 0, 0.5, 0.5, 1]), np.array([0, 0.5, 0.5, 1, 1])
    got = roc.tpr_on_grid(fpr, tpr, np.array([0, 0.25, 0.5, 0.75, 1]))
    np.testing.assert_allclose(got, [0.5, 0.5, 1, 1, 1])


def test_bootstrap_band_shape_and_order():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(40), np.zeros(40)].astype(int)
    s = np.r_[rng.normal(1, 1, 40), rng.normal(0, 1, 40)]
    band = roc.bootstrap_band(y, s, n_boot=100, n_grid=101, seed=0)
    assert band["fpr"].shape == band["mean"].shape == band["lo"].shape == band["hi"].shape == (101,)
    assert np.all(band["lo"] <= band["mean"] + 1e-12) and np.all(band["mean"] <= band["hi"] + 1e-12)
    assert band["lo"].min() >= 0 and band["hi"].max() <= 1 and band["mean"][-1] == pytest.approx(1)
    assert abs(band["auroc_mean"] - roc_auc_score(y, s)) < 0.05 and 0 < band["auroc_sd"] < 0.1
    with pytest.raises(ValueError, match="both classes"):
        roc.bootstrap_band(np.ones(5, int), np.arange(5.0))


# ---------------------------------------------------------------- OpenAI-compatible client on a local server

class _Server:
    def __init__(self, fail_first: int = 0, status: int = 500):
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                outer.auth.append(self.headers.get("Authorization"))
                if len(outer.requests) <= fail_first:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b'{"error": "try later"}')
                    return
                if body.get("logprobs"):
                    top = [{"token": "Yes", "logprob": math.log(0.6)}, {"token": " no", "logprob": math.log(0.3)},
                           {"token": "Maybe", "logprob": math.log(0.1)}]
                    reply = {"choices": [{"message": {"content": "Yes"},
                                          "logprobs": {"content": [{"token": "Yes", "logprob": math.log(0.6),
                                                                    "top_logprobs": top}]}}]}
                else:
                    reply = {"choices": [{"message": {"content": "Words about cats.\nSecond line"}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def server():
    s = _Server(fail_first=1)
    yield s
    s.close()


def test_openai_client_logprobs_retry_and_cache(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sk-local")
    b = OpenAICompatible("llama-test", server.url, "TEST_KEY", backoff_s=0.01, cache=CallCache(tmp_path))
    conv = prompts.detection("cats", "the cat sat")
    p = b.yes_probability([conv])
    assert p[0] == pytest.approx(0.6 / 0.9) and b.last_answer_mass[0] == pytest.approx(0.9)
    assert len(server.requests) == 2  # a 500, then the retry
    sent = server.requests[-1]
    assert sent["model"] == "llama-test" and sent["logprobs"] is True and sent["max_tokens"] == 1
    assert sent["messages"] == conv and server.auth[-1] == "Bearer sk-local"
    assert b.yes_probability([conv])[0] == pytest.approx(0.6 / 0.9)
    assert len(server.requests) == 2 and b.cache.hits == 1  # second call: from the disk cache
    again = OpenAICompatible("llama-test", server.url, "TEST_KEY", cache=CallCache(tmp_path))
    assert again.generate([prompts.explain(["<<cat>>"])]) == ["Words about cats.\nSecond line"]
    assert again.generate([prompts.explain(["<<cat>>"])]) == ["Words about cats.\nSecond line"]
    assert len(server.requests) == 3


def test_openai_client_gives_up_with_a_clear_error(tmp_path):
    s = _Server(fail_first=100, status=400)
    try:
        b = OpenAICompatible("m", s.url, backoff_s=0.01, cache=CallCache(tmp_path))
        with pytest.raises(LLMError, match="refused the request"):
            b.generate([prompts.explain(["x"])])
        assert len(s.requests) == 1  # a 400 is not retried
    finally:
        s.close()
    s = _Server(fail_first=100, status=503)
    try:
        b = OpenAICompatible("m", s.url, max_retries=2, backoff_s=0.01, cache=CallCache(tmp_path))
        with pytest.raises(LLMError, match="no answer after 3 tries"):
            b.generate([prompts.explain(["y"])])
        assert len(s.requests) == 3
    finally:
        s.close()


def test_parse_yes_no_without_logprobs_falls_back_to_text():
    assert parse_yes_no({"choices": [{"message": {"content": "No."}}]}) == (0.0, 0.0)
    assert parse_yes_no({"choices": [{"message": {"content": "yes"}, "logprobs": None}]}) == (1.0, 0.0)


# ---------------------------------------------------------------- hf-local backend on the tiny model

@pytest.mark.usefixtures("iso_cache")
def test_hf_local_yes_probability_is_batch_invariant(tmp_path):
    from saesanity.autointerp.llm import HFLocal

    convs = [prompts.detection("cats", t) for t in ("a cat", "the dog barked loudly at night", "x")]
    b = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=3, cache=CallCache(tmp_path / "a"))
    one = HFLocal("smollm2-tiny-random", dtype="float32", batch_size=1, cache=CallCache(tmp_path / "b"))
    p, q = b.yes_probability(convs), one.yes_probability(convs)
    assert np.all((p > 0) & (p < 1)) and np.all(b.last_answer_mass > 0)
    np.testing.assert_allclose(p, q, atol=1e-5)  # right padding cannot change a row's last position
    assert isinstance(b.generate([prompts.explain(["<<cat>>"])], max_new_tokens=5)[0], str)


@pytest.mark.usefixtures("iso_cache")
def test_hf_local_calls_are_cached_per_forward_dtype(tmp_path):
    import json
    import sqlite3

    from saesanity.autointerp.llm import HFLocal

    convs = [prompts.detection("cats", "a cat")]
    b = HFLocal("smollm2-tiny-random", dtype="float32", cache=CallCache(tmp_path), progress=False)
    p = b.yes_probability(convs)
    b.cache.flush()
    (call,) = sqlite3.connect(tmp_path / "calls.sqlite").execute("SELECT call FROM calls").fetchone()
    assert json.loads(call)["dtype"] == "float32"
    again = HFLocal("smollm2-tiny-random", dtype="float32", cache=CallCache(tmp_path), progress=False)
    np.testing.assert_array_equal(again.yes_probability(convs), p)
    assert (again.cache.hits, again.cache.misses) == (1, 0)
    half = HFLocal("smollm2-tiny-random", dtype="bfloat16", cache=CallCache(tmp_path), progress=False)
    half.yes_probability(convs)
    assert (half.cache.hits, half.cache.misses) == (0, 1)  # a bf16 forward is another call
    from saesanity import machine

    assert HFLocal("smollm2-tiny-random").dtype == machine.resolve_dtype("auto")


# ---------------------------------------------------------------- the whole path, deterministic


@pytest.mark.usefixtures("iso_cache")
def test_calibration_rule_latents_score_above_noise_with_top_tokens_and_embedding():
    from saesanity.corpus import debian_dir, token_sequences
    from saesanity.models import load_tokenizer

    if not (debian_dir() / "root").exists():
        pytest.skip("run `make data` first")
    tok = load_tokenizer("smollm2-tiny-random")
    seqs = token_sequences("debian", tok, "smollm2-135m", 129, split="heldout", seed=0)[:300]
    flat = seqs[:, 1:].reshape(-1)
    pieces = E.piece_table(tok)
    rules = ["word:LORD", "word:God", "word:man", "word:said"]  # content words: what MiniLM can see
    la, names = E.rule_acts(pieces, flat, rules, n_noise=4, noise_rate=0.01, seed=0)
    win = E.Windows(seqs, 1, 32, flat.size)
    cfg = pipeline.InterpConfig(explainer="top-tokens", scorers=("embedding",), n_explain=10, n_score_act=30,
                                n_score_non=30)
    recs = pipeline.run(la, win, list(range(len(names))), cfg, pieces, progress=False)
    auc = {names[r["latent"]]: r["embedding"]["auroc"] for r in recs}
    rule = [auc[r] for r in rules]
    noise = [v for k, v in auc.items() if k.startswith("noise")]
    assert len(noise) == 4 and "'lord'" in recs[0]["explanation"].lower()
    assert min(rule) > max(noise), auc
    assert np.mean(rule) - np.mean(noise) > 0.2, auc


def test_score_latents_is_cached(iso_cache, monkeypatch):
    win = _windows(n_seq=20)
    la, _ = _planted_latent(win, 40)
    pieces = [f" w{i}" for i in range(500)]
    cfg = pipeline.InterpConfig(explainer="top-tokens", scorers=("embedding",), n_explain=10, n_score_act=5,
                                n_score_non=5)
    calls = []
    real = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = pipeline.score_latents({"sae": "t"}, la, win, [0], cfg, lambda: pieces, progress=False)
    second = pipeline.score_latents({"sae": "t"}, la, win, [0], cfg, lambda: pieces, progress=False)
    assert first == second and len(calls) == 1 and first[0]["embedding"]["auroc"] is not None


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="explainer='gpt'"):
        pipeline.InterpConfig(explainer="gpt").check()
    with pytest.raises(ValueError, match="scorers"):
        pipeline.InterpConfig(scorers=("simulation",)).check()
    with pytest.raises(ValueError, match="highlight_frac"):
        pipeline.InterpConfig(highlight_frac=0).check()


def test_at_chance_flags_uninformative_scores():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(60), np.zeros(60)].astype(int)
    assert roc.at_chance(y, rng.random(120))
    assert not roc.at_chance(y, y + rng.normal(0, 0.5, 120))


@pytest.mark.parametrize("reply, want", [
    ("The marked words have in common that they are all about rivers.\nMore text.", "They are all about rivers."),
    ("the marked words share: names of cities", "Names of cities"),
    ("Explanation: The marked words are verbs of motion", "Verbs of motion"),
    ('"Plural nouns"', "Plural nouns"),
    ("Answer: dates and times", "dates and times"),
    ("The marked words", "The marked words"),  # nothing after the echo: kept as it is
    ("\n\n", "(no explanation)"),
])
def test_clean_explanation_drops_labels_and_the_echo_of_the_question(reply, want):
    from saesanity.autointerp.prompts import clean_explanation

    assert clean_explanation(reply) == want


def test_separation_is_the_auroc_of_the_two_groups():
    from sklearn.metrics import roc_auc_score

    from saesanity.autointerp.roc import separation

    rng = np.random.default_rng(3)
    a, b = rng.normal(0.7, 0.1, 9).round(2), rng.normal(0.55, 0.1, 7).round(2)  # rounded: some ties
    want = roc_auc_score(np.r_[np.ones(a.size), np.zeros(b.size)], np.r_[a, b])
    assert separation(a, b) == pytest.approx(want)
    assert separation([0.9, 0.8], [0.1, 0.2]) == 1.0 and separation([0.5], [0.5]) == 0.5
    with pytest.raises(ValueError, match="both sides"):
        separation([], [0.5])
