import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from saesanity import cache


def _writer(calls, content=b"hello world"):
    def compute(work):
        calls.append(1)
        (work / "data.bin").write_bytes(content)
        return {"n": len(content)}
    return compute


def test_computes_once_then_reads(iso_cache):
    calls = []
    p1 = cache.cached("step", {"a": 1}, _writer(calls))
    p2 = cache.cached("step", {"a": 1}, _writer(calls))
    assert p1 == p2 and len(calls) == 1
    meta = json.loads((p1 / "meta.json").read_text())
    assert meta["fields"] == {"a": 1} and meta["info"] == {"n": 11}
    assert meta["files"]["data.bin"]["size"] == 11


def test_key_depends_on_fields_and_version(iso_cache):
    assert cache.key_of("s", {"a": 1}) != cache.key_of("s", {"a": 2})
    assert cache.key_of("s", {"a": 1}) != cache.key_of("s", {"a": 1}, version=2)
    assert cache.key_of("s", {"a": 1, "b": 2}) == cache.key_of("s", {"b": 2, "a": 1})


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_damaged_artifact_is_recomputed(iso_cache, damage):
    calls = []
    path = cache.cached("step", {"d": damage}, _writer(calls))
    f = path / "data.bin"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[:5])
    elif damage == "flip":  # same size, one byte changed, mtime restored: only the hash can tell
        st = f.stat()
        f.write_bytes(b"jello world")
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif damage == "delete":
        f.unlink()
    else:
        (path / "meta.json").write_text("{not json")
    cache._verified.clear()  # a new process would not have the memo
    assert not cache.is_valid(path)
    path2 = cache.cached("step", {"d": damage}, _writer(calls))
    assert len(calls) == 2 and (path2 / "data.bin").read_bytes() == b"hello world"


def test_failed_compute_leaves_nothing_valid(iso_cache):
    def boom(work):
        (work / "data.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.cached("step", {"x": 1}, boom)
    final = cache.artifact_path("step", {"x": 1})
    assert not final.exists()
    assert not list(final.parent.glob("*.tmp-*"))


def test_sigkilled_write_is_never_read_as_valid(iso_cache, tmp_path):
    script = textwrap.dedent("""
        import os, signal
        from saesanity import cache
        def compute(work):
            (work / "data.bin").write_bytes(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        cache.cached("step", {"k": 1}, compute, resumable=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL
    final = cache.artifact_path("step", {"k": 1})
    assert not final.exists()  # only the .partial work dir is left
    assert final.with_name(final.name + ".partial").exists()
    calls = []
    path = cache.cached("step", {"k": 1}, _writer(calls), resumable=True)
    assert calls == [1] and (path / "data.bin").read_bytes() == b"hello world" and cache.is_valid(path)


def test_cached_many_computes_only_missing(iso_cache):
    seen = []

    def compute(missing, works):
        seen.append(list(missing))
        for w in works:
            (w / "x").write_text(w.name)

    cache.cached_many("m", [{"i": 0}], compute)
    cache.cached_many("m", [{"i": 0}, {"i": 1}, {"i": 2}], compute)
    assert seen == [[0], [1, 2]]


def test_non_json_fields_rejected(iso_cache):
    with pytest.raises(TypeError, match="plain JSON"):
        cache.key_of("s", {"a": object()})


def test_large_untouched_files_are_not_rehashed(iso_cache, monkeypatch):
    """A published file at least FAST_VERIFY_BYTES large is trusted on size + mtime; touched, it is hashed again
    (and a change found); SAESANITY_VERIFY=full hashes it whatever its mtime."""
    import os

    monkeypatch.setattr(cache, "FAST_VERIFY_BYTES", 1000)
    path = cache.cached("big", {"x": 1}, lambda w: (w / "a.bin").write_bytes(b"\0" * 4096) and {})
    cache._verified.clear()
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
    assert cache.is_valid(path) and hashed == []
    monkeypatch.setenv("SAESANITY_VERIFY", "full")
    assert cache.is_valid(path) and hashed == ["a.bin"]
    monkeypatch.delenv("SAESANITY_VERIFY")
    f = path / "a.bin"
    st = f.stat()
    with open(f, "r+b") as fh:  # a flipped byte, same size; mtime moves with the write
        fh.write(b"\1")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    cache._verified.clear()
    assert not cache.is_valid(path)


# ---------------------------------------------------------------- concurrent runs on one cache

_WORKER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from saesanity import cache
    step, keys, delay, log = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3]), Path(sys.argv[4])

    def compute(missing, works):
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {','.join(keys[i] for i in missing)}\\n")
        for i, w in zip(missing, works):
            (w / "part.txt").write_text(keys[i])  # a resumable folder: a second writer would interleave here
            time.sleep(delay)
            (w / "part.txt").write_text((w / "part.txt").read_text() + "-done")
        return [{"by": os.getpid()} for _ in missing]

    paths = cache.cached_many(step, [{"k": k} for k in keys], compute, resumable=True)
    print(" ".join((p / "part.txt").read_text() for p in paths))
""")


def _start(keys, delay, log, env):
    return subprocess.Popen([sys.executable, "-c", _WORKER, "s", ",".join(keys), str(delay), str(log)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("stagger", [0.0, 0.4])
def test_two_processes_asking_for_one_artifact_compute_it_once(iso_cache, tmp_path, stagger):
    """Simultaneous and staggered: the second waits (and says so), then reads what the first published; no work
    folder is written by two processes; both print the single run's result."""
    import time

    log, env = tmp_path / "log", {**os.environ, "SAESANITY_CACHE": str(iso_cache)}
    a = _start(["x"], 1.5, log, env)
    time.sleep(stagger)
    b = _start(["x"], 1.5, log, env)
    outs = [p.communicate(timeout=60) for p in (a, b)]
    assert [p.returncode for p in (a, b)] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["x-done", "x-done"]
    assert len(log.read_text().splitlines()) == 1  # computed once
    assert sum("saesanity: waiting for process" in e for _, e in outs) == 1
    assert cache.is_valid(cache.artifact_path("s", {"k": "x"}))


def test_overlapping_families_in_opposite_orders_neither_deadlock_nor_repeat(iso_cache, tmp_path):
    log, env = tmp_path / "log", {**os.environ, "SAESANITY_CACHE": str(iso_cache)}
    a, b = _start(["p", "q"], 0.8, log, env), _start(["q", "p", "r"], 0.8, log, env)
    outs = [p.communicate(timeout=60) for p in (a, b)]
    assert [p.returncode for p in (a, b)] == [0, 0], outs
    assert outs[0][0].split() == ["p-done", "q-done"] and outs[1][0].split() == ["q-done", "p-done", "r-done"]
    computed = [k for line in log.read_text().splitlines() for k in line.split()[1].split(",")]
    assert sorted(computed) == ["p", "q", "r"]  # each artifact once


def test_a_killed_holder_releases_its_lock_and_the_next_run_resumes(iso_cache, tmp_path):
    import signal
    import time

    log, env = tmp_path / "log", {**os.environ, "SAESANITY_CACHE": str(iso_cache)}
    a = _start(["y"], 30, log, env)
    for _ in range(200):  # until it is computing
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    b = _start(["y"], 0.1, log, env)
    out, err = b.communicate(timeout=60)
    assert b.returncode == 0 and out.strip() == "y-done" and "waiting" not in err


def test_a_nested_request_for_a_held_artifact_does_not_wait_on_itself(iso_cache):
    final = cache.artifact_path("s", {"k": 1})
    with cache.artifact_lock(final):
        with cache.artifact_lock(final):  # would block forever if the lock were not re-entrant
            assert cache.lock_path(final).read_text().strip() == str(os.getpid())
    assert cache.lock_path(final).read_text() == ""  # released


def test_two_processes_collecting_the_same_activations_get_the_single_runs_array(iso_cache, tmp_path, tiny_llama_dir):
    """The case the lock exists for: a second `collect` used to reopen the first's acts.npy with mode='w+'."""
    import numpy as np

    script = textwrap.dedent(f"""
        import numpy as np, sys
        from saesanity.activations import ActivationSpec, collect
        spec = ActivationSpec(model="{tiny_llama_dir}", variant="trained", corpus="debian:fortunes", n_tokens=8192,
                              seq_len=64, seed=0, split="train")
        acts = collect(spec, ["resid_post.1", "mlp_out.0"], batch_size=4, progress=False)
        np.save(sys.argv[1], np.concatenate([acts["resid_post.1"], acts["mlp_out.0"]], 1))
    """)
    env = {**os.environ, "SAESANITY_CACHE": str(iso_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"{i}.npy")], env=env,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    from conftest import linked_cache

    subprocess.run([sys.executable, "-c", script, str(tmp_path / "ref.npy")], check=True,
                   env={**env, "SAESANITY_CACHE": str(linked_cache(tmp_path / "single"))})
    ref = np.load(tmp_path / "ref.npy")
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"{i}.npy"), ref)


def test_list_and_clean_remove_only_what_is_provably_dead(iso_cache, tmp_path):
    ok = cache.cached("s", {"k": "ok"}, lambda w: (w / "f").write_text("x") and None)
    bad = cache.cached("s", {"k": "bad"}, lambda w: (w / "f").write_text("y") and None)
    (bad / "f").write_text("tampered")
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_tmp = ok.with_name(f"{cache.key_of('s', {'k': 't'})}.tmp-{done.stdout.strip()}-abcd1234")
    live_tmp = ok.with_name(f"{cache.key_of('s', {'k': 'u'})}.tmp-{os.getpid()}-abcd1234")
    leftover = ok.with_name(ok.name + ".partial")  # its artifact is published: nothing will read it
    resumable = cache.artifact_path("s", {"k": "r"}).with_name(cache.key_of("s", {"k": "r"}) + ".partial")
    running = cache.artifact_path("s", {"k": "run"})
    for d in (dead_tmp, live_tmp, leftover, resumable, running.with_name(running.name + ".partial")):
        d.mkdir(parents=True)
        (d / "w").write_text("work")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from saesanity import cache
        with cache.artifact_lock(Path("{running}")):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        states = {e["path"].name: e["state"] for e in cache.entries()}
        assert states == {ok.name: "valid", bad.name: "invalid", dead_tmp.name: "dead", live_tmp.name: "running",
                          leftover.name: "dead", resumable.name: "resumable", running.name + ".partial": "running"}
        out = subprocess.run([sys.executable, "-m", "saesanity.cache", "list"], capture_output=True, text=True,
                             check=True).stdout
        assert "s: 1 artifact invalid" in out and "`clean` removes 3 dead or invalid entries" in out
        gone = {e["path"].name for e in cache.clean()}
        assert gone == {bad.name, dead_tmp.name, leftover.name}
        assert ok.exists() and live_tmp.exists() and resumable.exists() and running.with_name(running.name + ".partial").exists()
        assert {e["path"].name for e in cache.clean(partial=True)} == {resumable.name}
    finally:
        holder.kill()
        holder.wait()


def test_byte_counts_read_at_every_scale():
    from saesanity.cache import human_bytes

    assert [human_bytes(n) for n in (0, 999, 80_640, 12_500_000, 3_021_000_000, 24.6e12)] == \
        ["0 B", "999 B", "80.6 kB", "12.5 MB", "3.02 GB", "24.60 TB"]


# ---------------------------------------------------------------- results keyed by content (`digest`, `cached_json`)

def test_digest_reads_content_dtype_and_shape_and_blocks_agree():
    import numpy as np
    import torch

    a = np.arange(24, dtype=np.float32).reshape(6, 4)
    assert cache.digest(a) == cache.digest(a.copy())                       # content, not identity
    assert cache.digest(a) == cache.digest(a, block_bytes=16)              # row blocks of 1 row: same bytes read
    assert cache.digest(a) != cache.digest(a.astype(np.float64))           # dtype
    assert cache.digest(a) != cache.digest(a.reshape(4, 6))                # shape
    b = a.copy()
    b[5, 3] = np.nextafter(b[5, 3], np.inf)                                # one ulp in the last row
    assert cache.digest(a) != cache.digest(b)
    t = torch.arange(6, dtype=torch.bfloat16)
    assert cache.digest(t) == cache.digest(t.clone()) != cache.digest(t.float())
    assert cache.digest("x", 1) != cache.digest("x", 2)


def test_cached_json_computes_once_and_round_trips_exactly(iso_cache):
    import math

    import numpy as np

    calls = []
    value = {"f": 0.1 + 0.2, "nan": math.nan, "i": 3, "arr": np.array([1e-8, 0.3], dtype=np.float32),
             "l": [np.float32(0.7), (1, 2)]}

    def compute():
        calls.append(1)
        return value

    a = cache.cached_json("memo", {"k": 1}, compute)
    b = cache.cached_json("memo", {"k": 1}, compute)
    assert len(calls) == 1 and a.keys() == b.keys() == value.keys()   # the first call also reads what it stored
    assert b["f"] == 0.1 + 0.2 and math.isnan(b["nan"]) and b["i"] == 3 and isinstance(b["i"], int)
    assert b["arr"].dtype == np.float32 and np.array_equal(b["arr"], value["arr"])
    assert b["l"] == [float(np.float32(0.7)), [1, 2]]
    with pytest.raises(TypeError, match="not JSON-able"):
        cache.cached_json("memo", {"k": 2}, lambda: {"x": object()})
    assert not any(p.name.endswith(".partial") for p in (iso_cache / "memo").iterdir())
