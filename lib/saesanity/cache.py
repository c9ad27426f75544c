"""Content-addressed, atomic, self-describing artifacts on disk.

An artifact is a directory `<cache>/<step>/<key>/` holding the files a computation wrote and a
`meta.json` that records the key fields, the step's version, and the size and SHA-256 of every file.
The key is the SHA-256 of (step, version, key fields), so changing any parameter that affects the
result — or bumping the step's version when its code changes meaning — gives a new artifact.

Writes are atomic: the computation writes into a work directory beside the final one and the work
directory is renamed into place only after `meta.json` is written and flushed. A killed write leaves
a work directory that is never read as a result. A final directory whose files do not match
`meta.json` (truncated, edited, half-deleted) is treated as missing: it is removed and recomputed.

Concurrent runs on one cache are safe: the check / compute / publish of an artifact holds an exclusive lock
(`fcntl.flock` on `<key>.lock` beside it), so a second process asking for the same artifact waits — saying
what it waits for and on which process — and then reads what the first published instead of computing it
again in the same work folder. The kernel drops a lock when its holder dies, so a killed run never blocks
the next one; a resumable work folder (`<key>.partial`) is only ever written by the lock's holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .paths import cache_dir

META = "meta.json"
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process
# Files at least this large are trusted without re-hashing when their size and mtime are the ones
# recorded at publication (multi-GB activation arrays would otherwise be re-read at every start);
# smaller files, and any file whose size or mtime moved, are hashed. SAESANITY_VERIFY=full hashes all.
FAST_VERIFY_BYTES = 256 << 20


def _canonical(fields: dict[str, Any]) -> str:
    try:
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"cache key fields must be plain JSON values (str/int/float/bool/list/dict): {err}") from None


def key_of(step: str, fields: dict[str, Any], version: int = 1) -> str:
    """Hex key of an artifact: sha256 of the canonical JSON of (step, version, fields), 20 chars."""
    blob = _canonical({"step": step, "version": version, "fields": fields})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def artifact_path(step: str, fields: dict[str, Any], version: int = 1) -> Path:
    return cache_dir() / step / key_of(step, fields, version)


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    """SHA-256 of a file, memoised per process on (path, size, mtime) so big arrays are hashed once."""
    st = path.stat()
    memo = (str(path), st.st_size, st.st_mtime_ns)
    if memo in _verified:
        return _verified[memo]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    _verified[memo] = h.hexdigest()
    return _verified[memo]


def _describe(workdir: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(workdir.rglob("*")):
        if p.is_file() and p.name != META:
            st = p.stat()
            files[str(p.relative_to(workdir))] = {"size": st.st_size, "sha256": sha256_file(p),
                                                  "mtime_ns": st.st_mtime_ns}
    return files


def _file_ok(f: Path, info: dict[str, Any]) -> bool:
    st = f.stat()
    if st.st_size != info["size"]:
        return False
    if (st.st_size >= FAST_VERIFY_BYTES and info.get("mtime_ns") == st.st_mtime_ns
            and os.environ.get("SAESANITY_VERIFY") != "full"):
        return True  # untouched since it was published (see FAST_VERIFY_BYTES)
    return sha256_file(f) == info["sha256"]


def is_valid(path: Path) -> bool:
    """True when `path/meta.json` exists and every file it lists has the recorded size and hash (a large file
    whose size and mtime are those recorded at publication is not re-hashed: `FAST_VERIFY_BYTES`)."""
    try:
        meta = json.loads((path / META).read_text())
        files = meta["files"]
    except (OSError, ValueError, KeyError):
        return False
    for rel, info in files.items():
        try:
            if not _file_ok(path / rel, info):
                return False
        except OSError:
            return False
    return True


def read_meta(path: Path) -> dict[str, Any]:
    return json.loads((path / META).read_text())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(work: Path, final: Path, step: str, fields: dict[str, Any], version: int, info: dict) -> None:
    meta = {
        "step": step,
        "version": version,
        "fields": fields,
        "key": final.name,
        "saesanity_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "info": info,
        "files": _describe(work),
    }
    (work / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
    for p in work.rglob("*"):
        if p.is_file():
            with open(p, "rb+") as f:
                os.fsync(f.fileno())
    _fsync_dir(work)
    try:
        os.rename(work, final)
    except OSError:
        if is_valid(final):  # another process finished the same artifact first
            shutil.rmtree(work, ignore_errors=True)
        else:
            raise
    _fsync_dir(final.parent)


# lock files this thread holds: a nested request for one of them does not wait on itself (another thread's
# request opens its own descriptor, and flock makes it wait like another process's)
_held = threading.local()


def lock_path(final: Path) -> Path:
    """The lock file of the artifact at `final`."""
    return final.with_name(final.name + ".lock")


@contextlib.contextmanager
def artifact_lock(final: Path, what: str = ""):
    """Hold the exclusive lock of the artifact at `final` (blocking; re-entrant within this process). When
    another process holds it, say so on stderr, with its pid, before waiting."""
    path = lock_path(final)
    held = _held.__dict__.setdefault("paths", set())
    if str(path) in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            print(f"saesanity: waiting for process {holder}, which is computing {what or final.parent.name} "
                  f"{final.name} ({final})", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        held.add(str(path))
        try:
            yield
        finally:
            held.discard(str(path))
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def cached_many(
    step: str,
    fields_list: list[dict[str, Any]],
    compute: Callable[[list[int], list[Path]], list[dict[str, Any]] | None],
    *,
    version: int = 1,
    resumable: bool = False,
) -> list[Path]:
    """Like `cached`, for several artifacts that one computation produces together.

    `compute(missing, workdirs)` is called once with the indices (into `fields_list`) of the
    artifacts that are missing or invalid and one work directory for each; artifacts already
    valid are not recomputed. Each artifact is published (renamed into place) on its own.
    """
    finals = [artifact_path(step, f, version) for f in fields_list]
    missing = [i for i, final in enumerate(finals) if not is_valid(final)]
    if not missing:
        return finals
    with contextlib.ExitStack() as locks:
        # one global order (by path), so two processes asking for overlapping sets cannot deadlock
        for i in sorted(missing, key=lambda i: str(finals[i])):
            locks.enter_context(artifact_lock(finals[i], step))
        missing = [i for i in missing if not is_valid(finals[i])]  # published by another process meanwhile?
        if missing:
            _compute_and_publish(step, fields_list, finals, missing, compute, version, resumable)
    return finals


def _compute_and_publish(step: str, fields_list: list[dict[str, Any]], finals: list[Path], missing: list[int],
                         compute: Callable, version: int, resumable: bool) -> None:
    """Under the artifacts' locks: clear what is corrupt, compute the missing ones in work folders, publish."""
    for i in missing:
        shutil.rmtree(finals[i], ignore_errors=True)  # corrupt or truncated: never read it
    works = []
    for i in missing:
        final = finals[i]
        final.parent.mkdir(parents=True, exist_ok=True)
        name = f"{final.name}.partial" if resumable else f"{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        work = final.with_name(name)
        work.mkdir(parents=True, exist_ok=True)
        works.append(work)
    try:
        infos = compute(missing, works) or [{} for _ in missing]
        for i, work, info in zip(missing, works, infos):
            _publish(work, finals[i], step, fields_list[i], version, info)
    except BaseException as err:
        if not resumable:
            for work in works:
                shutil.rmtree(work, ignore_errors=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(err, DiskFullError):
            free = shutil.disk_usage(works[0].parent).free
            kept = "its partial work is kept and resumes" if resumable else "nothing of it was kept"
            raise DiskFullError(err.errno, f"no space left under {works[0].parent} ({human_bytes(free)} free) while "
                                f"computing {step} {finals[missing[0]].name}: free space or set SAESANITY_CACHE "
                                f"elsewhere, then rerun ({kept})") from None
        raise


class DiskFullError(OSError):
    """The cache's filesystem filled up (or its quota ran out) during a computation: one line saying where."""

    def __str__(self) -> str:
        return self.strerror


def cached(
    step: str,
    fields: dict[str, Any],
    compute: Callable[[Path], dict[str, Any] | None],
    *,
    version: int = 1,
    resumable: bool = False,
) -> Path:
    """Return the directory of the artifact for (step, fields), computing it first if needed.

    `compute(workdir)` writes its files into `workdir` and may return a dict of extra metadata
    (stored under `meta.json["info"]`). With `resumable=True` the work directory has a stable name
    (`<key>.partial`) so a computation interrupted part-way can pick up what it already wrote;
    otherwise each attempt gets a fresh work directory.
    """
    (path,) = cached_many(step, [fields], lambda _, works: [compute(works[0]) or {}], version=version,
                          resumable=resumable)
    return path


def digest(*values: Any, block_bytes: int = 64 << 20) -> str:
    """SHA-256 of `values` by content: numpy arrays (a memmap is read in row blocks of about `block_bytes`, never
    copied whole) and torch tensors by dtype, shape and bytes; anything else by its JSON form (`_canonical`).
    What keys a result computed from in-memory data (`cached_json`), where no artifact names the input."""
    h = hashlib.sha256()
    for v in values:
        if hasattr(v, "detach") and hasattr(v, "untyped_storage"):  # a torch tensor (bf16 too: read as its bytes)
            import torch

            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"tensor {v.dtype} {tuple(v.shape)};".encode())
            h.update(t.view(torch.uint8).numpy().data)
        elif isinstance(v, np.ndarray):
            h.update(f"array {v.dtype} {v.shape};".encode())
            rows = max(1, block_bytes // max(1, v[:1].nbytes)) if v.ndim else 1
            for s in range(0, v.shape[0], rows) if v.ndim else [None]:
                h.update(np.ascontiguousarray(v if s is None else v[s:s + rows]).data)
        else:
            h.update(_canonical({"v": v}).encode())
        h.update(b"|")
    return h.hexdigest()


def _encode_json(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype), "shape": list(x.shape)}
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"cached_json: {type(x).__name__} is not JSON-able")


def _decode_json(d: dict) -> Any:
    if "__ndarray__" in d:
        return np.array(d["__ndarray__"], dtype=d["dtype"]).reshape(d["shape"])
    return d


def cached_json(step: str, fields: dict[str, Any], compute: Callable[[], Any], *, version: int = 1) -> Any:
    """`compute()`'s value for (step, fields), computed once and kept as an artifact (`value.json`): dicts, lists,
    floats (exactly: JSON keeps a float's repr; NaN and inf too), ints, strings and numpy arrays (restored with
    their dtype and shape; tuples come back as lists). For small results that cost a pass over data to make."""
    def write(work: Path) -> None:
        (work / "value.json").write_text(json.dumps(compute(), default=_encode_json))

    return json.loads((cached(step, fields, write, version=version) / "value.json").read_text(),
                      object_hook=_decode_json)


# ---------------------------------------------------------------- inspecting and clearing the cache

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_held(final: Path) -> bool:
    """Whether some process holds the lock of the artifact at `final` now."""
    path = lock_path(final)
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _size(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def entries(root: Path | None = None) -> list[dict[str, Any]]:
    """Every folder under the cache's steps, as `python -m saesanity.cache list` shows it: kind `artifact`
    (valid or not), `partial` (a resumable computation's work folder) or `tmp` (a one-attempt work folder), its
    size on disk, and `state`: valid / invalid for artifacts; for work folders `running` (its artifact's lock is
    held), `resumable` (a partial no one runs, whose artifact is missing: the next run picks it up) or `dead`
    (a tmp folder of a process that is gone, or a partial whose artifact is already published)."""
    root = root or cache_dir()
    out = []
    for step in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.exists() else []:
        for d in sorted(p for p in step.iterdir() if p.is_dir() and not p.is_symlink()):
            name = d.name
            if name.endswith(".partial") or ".tmp-" in name:
                final = d.with_name(name.split(".")[0])
                kind = "partial" if name.endswith(".partial") else "tmp"
                if lock_held(final):
                    state = "running"
                elif kind == "tmp":
                    pid = name.split(".tmp-")[1].split("-")[0]
                    state = "running" if pid.isdigit() and _pid_alive(int(pid)) else "dead"
                else:
                    state = "dead" if is_valid(final) else "resumable"
            elif (d / META).exists() or len(name) == 20:
                kind, state = "artifact", "valid" if is_valid(d) else "invalid"
            else:
                continue  # not ours (e.g. the Debian text, built models): left alone
            out.append({"step": step.name, "path": d, "kind": kind, "state": state, "bytes": _size(d)})
    return out


def clean(root: Path | None = None, *, partial: bool = False, step: str | None = None) -> list[dict[str, Any]]:
    """Remove what is provably dead (dead work folders, invalid artifacts no one is computing); with
    `partial=True` also resumable work folders (their progress is lost). Running work is never touched.
    Returns the entries removed."""
    gone = []
    for e in entries(root):
        if step and e["step"] != step:
            continue
        if e["state"] in ("dead", "invalid") or (partial and e["state"] == "resumable"):
            final = e["path"].with_name(e["path"].name.split(".")[0])
            with artifact_lock(final, e["step"]):  # nobody starts on it while it goes
                shutil.rmtree(e["path"], ignore_errors=True)
            gone.append(e)
    return gone


def human_bytes(n: float) -> str:
    """A byte count a reader can compare: 512 B, 161.3 kB, 12.5 MB, 3.02 GB (a precision that does not round a
    small shortfall to "0.0 GB")."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{2 if unit in ('TB', 'GB') else 1}f} {unit}"
    return f"{int(n)} B"


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m saesanity.cache", description=(
        "List or clear the artifact cache ($SAESANITY_CACHE, default <repo>/.cache). `list` shows each step's "
        "artifacts and work folders with their state; `clean` removes dead work folders and invalid artifacts "
        "(--partial: resumable work folders too). Running computations are never touched."))
    p.add_argument("command", choices=["list", "clean"])
    p.add_argument("--partial", action="store_true", help="clean: also remove resumable work folders")
    p.add_argument("--step", help="only this step (e.g. sae, activations)")
    p.add_argument("-v", "--verbose", action="store_true", help="list: every folder, not one line per step")
    a = p.parse_args(argv)
    if a.command == "clean":
        gone = clean(partial=a.partial, step=a.step)
        for e in gone:
            print(f"removed {e['kind']} ({e['state']}, {human_bytes(e['bytes'])}): {e['path']}")
        print(f"{len(gone)} removed, {human_bytes(sum(e['bytes'] for e in gone))} freed under {cache_dir()}")
        return 0
    rows = [e for e in entries() if not a.step or e["step"] == a.step]
    by: dict[str, dict[str, list]] = {}
    for e in rows:
        by.setdefault(e["step"], {}).setdefault(f"{e['kind']} {e['state']}", []).append(e)
    for s, groups in by.items():
        parts = ", ".join(f"{len(v)} {k} ({human_bytes(sum(e['bytes'] for e in v))})" for k, v in sorted(groups.items()))
        print(f"{s}: {parts}")
        if a.verbose:
            for e in sorted((e for v in groups.values() for e in v), key=lambda e: str(e["path"])):
                print(f"    {e['kind']:8} {e['state']:9} {human_bytes(e['bytes']):>10}  {e['path'].name}")
    print(f"total {human_bytes(sum(e['bytes'] for e in rows))} under {cache_dir()}; `clean` removes "
          f"{sum(e['state'] in ('dead', 'invalid') for e in rows)} dead or invalid entries")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
