"""The model-call cache: one JSON file per call (the earlier layout) vs one SQLite database (`CallCache`).

    .venv/bin/python bench/bench_llm_cache.py [--n 100000] [--dir /path/on/the/cache/disk]

Writes `--n` calls shaped like the detection scorer's (a prompt with a 32-token excerpt, value
[P(yes), mass]) into a fresh folder both ways, then reads them all back: the file layout one file
per call (as the pipeline did), the database with one `get_many` (as `Backend` does) and one `get`
per call. Each part in the same process, the page cache warm. Prints seconds, calls/s and bytes on disk.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from saesanity.autointerp import prompts
from saesanity.autointerp.llm import CallCache


def calls(n: int):
    for i in range(n):
        text = f" excerpt {i}: " + " ".join(f"tok{(i * 7 + j) % 997}" for j in range(32))
        fields = {"backend": "openai-compatible", "model": "meta-llama/Llama-3.1-70B-Instruct", "op": "yes_no",
                  "messages": prompts.detection("the word 'cat' and other pets", text)}
        yield CallCache.key(fields), fields, [((i * 37) % 1000) / 1000, 0.9]


def file_put(root: Path, key: str, fields: dict, value) -> None:  # the earlier CallCache.put
    p = root / key[:2] / f"{key}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({"call": fields, "value": value}, ensure_ascii=False))
    os.replace(tmp, p)


def disk_bytes(path: Path) -> int:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dir", default=None, help="where to make the scratch folder (default: the system temp dir)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="llm-cache-bench-", dir=a.dir))
    try:
        data = list(calls(a.n))
        rows = []

        root = work / "files"
        t = time.perf_counter()
        for k, f, v in data:
            file_put(root, k, f, v)
        w = time.perf_counter() - t
        t = time.perf_counter()
        got = [json.loads((root / k[:2] / f"{k}.json").read_text())["value"] for k, _, _ in data]
        r = time.perf_counter() - t
        assert got == [v for _, _, v in data]
        rows.append(("one JSON file per call", w, r, None, disk_bytes(root)))

        db = work / "db"
        c = CallCache(db)
        t = time.perf_counter()
        for k, f, v in data:
            c.put(k, f, v)
        c.flush()
        w = time.perf_counter() - t
        c.close()
        c = CallCache(db)
        t = time.perf_counter()
        got = c.get_many([k for k, _, _ in data])
        r = time.perf_counter() - t
        assert got == [v for _, _, v in data]
        c.close()
        c = CallCache(db)
        t = time.perf_counter()
        got1 = [c.get(k) for k, _, _ in data]
        r1 = time.perf_counter() - t
        assert got1 == got
        c.close()
        rows.append(("SQLite (CallCache)", w, r, r1, disk_bytes(db)))

        print(f"{a.n:,} calls in {work}")
        for name, w, r, r1, b in rows:
            one = "" if r1 is None else f"; one get() per call {r1:6.2f} s ({a.n / r1:9,.0f}/s)"
            print(f"  {name:24s} write {w:6.2f} s ({a.n / w:9,.0f}/s); read {r:6.2f} s ({a.n / r:9,.0f}/s){one}; "
                  f"{b / 2**20:7.1f} MiB on disk")
        print(f"  SQLite vs files: write {rows[0][1] / rows[1][1]:.1f}x, read {rows[0][2] / rows[1][2]:.1f}x faster")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
