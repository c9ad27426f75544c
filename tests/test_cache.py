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
