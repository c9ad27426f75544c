"""Hungarian matching of an SAE pair (encoder and decoder): our exact sparse solver vs dense scipy, same run.

    .venv/bin/python bench/matching.py [--sizes 4096 8192 16384 32768 65536 131072] [--d 768]
                                       [--scipy-max 32768] [--out bench/matching.json]

Each size gets one synthetic pair (`assignment.structured_pair`, d = 768: 40% of latents shared
with noise, 30% mixtures of shared directions, 30% unrelated; each encoder direction is its decoder
direction + 0.4 × a random unit vector). Every measurement runs in a fresh process, so its peak
resident memory (ru_maxrss, the whole process: Python, torch, inputs) is its own:
- `scipy`: `matching.match_pair(method="scipy")` — the dense cosine matrix and
  `linear_sum_assignment`, encoder then decoder (their n² float64 matrices do not fit twice in 24 GB);
- `ours`: `match_pair(method="sparse", parallel=False)`, encoder then decoder in one process;
- `ours ×2`: `match_pair(method="sparse")` as the library runs it from 16K latents — encoder in a
  second process while this one solves the decoder (peak memory summed over the two processes).
Both include the cosine computation. Exactness: the same partners, the same matched-cosine total
and the same shared set under the paper's rule (`matching.PAPER_RULE`). Dense scipy is skipped
above --scipy-max or when n² · 12 bytes would not fit in memory; without it only `ours ×2` runs.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def fake_sae(enc, dec):
    """What `matching.directions` reads: W_enc [D, F] and W_dec [F, D]."""
    return SimpleNamespace(W_enc=enc.t(), W_dec=dec)


def child(n: int, d: int, method: str, out: str) -> None:
    import torch

    from saesanity.assignment import structured_pair
    from saesanity.matching import match_pair

    dec_a, dec_b = structured_pair(n, d, seed=1)
    g = torch.Generator().manual_seed(2)  # encoder directions: the decoder's plus noise (cosine ≈ 0.93)
    enc_a, enc_b = (x + 0.4 * torch.nn.functional.normalize(torch.randn(x.shape, generator=g), dim=1)
                    for x in (dec_a, dec_b))
    a, b = fake_sae(enc_a, dec_a), fake_sae(enc_b, dec_b)
    t = time.perf_counter()
    if method == "scipy":
        ab, _ = match_pair(a, b, method="scipy")
    else:
        ab, _ = match_pair(a, b, method="sparse", parallel=(method == "ours x2"))
    seconds = time.perf_counter() - t
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    np.savez(out, **vars(ab))
    print(json.dumps({"seconds": seconds, "peak_gib": own + (kids if method == "ours x2" else 0.0),
                      "threads": torch.get_num_threads()}))


def run(n: int, d: int, method: str, tmp: Path) -> dict:
    out = tmp / f"{method.replace(' ', '_')}_{n}.npz"
    proc = subprocess.run([sys.executable, __file__, "--child", str(n), str(d), method, str(out)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{method} at n={n} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as z:
        res["match"] = {k: z[k] for k in z.files}
    return res


def mem_total_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, d, method, out = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
        return child(n, d, method, out)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536, 131072])
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--scipy-max", type=int, default=32768)
    ap.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    a = ap.parse_args()

    from saesanity.matching import PAPER_RULE, PARALLEL_MIN, Match, shared

    rows = []
    print(f"SAE pair matching (encoder + decoder), d={a.d}, {os.cpu_count()} CPUs, "
          f"{mem_total_bytes() / 2**30:.0f} GiB", flush=True)
    print(f"{'n':>7} {'method':8} {'seconds':>8} {'peak GiB':>8} {'speed-up':>8}  exact (partners / total / shared set)")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.sizes:
            ref = None
            if n <= a.scipy_max and 12 * n * n < 0.9 * mem_total_bytes():
                ref = run(n, a.d, "scipy", Path(tmp))
                print(f"{n:>7} {'scipy':8} {ref['seconds']:8.1f} {ref['peak_gib']:8.2f} {'1.00x':>8}  (reference)",
                      flush=True)
                rows.append({"n": n, "method": "scipy", "seconds": ref["seconds"], "peak_gib": ref["peak_gib"]})
            methods = ("ours",) if n < PARALLEL_MIN else ("ours", "ours x2") if ref is not None else ("ours x2",)
            for method in methods:
                res = run(n, a.d, method, Path(tmp))
                row = {"n": n, "method": method, "seconds": res["seconds"], "peak_gib": res["peak_gib"]}
                text = "(no dense reference at this size)"
                if ref is not None:
                    m, r = Match(**res["match"]), Match(**ref["match"])
                    same_p = all(np.array_equal(getattr(m, f), getattr(r, f)) for f in ("dec_partner", "enc_partner"))
                    d_tot = max(abs(np.nansum(m.dec_cos, dtype=np.float64) - np.nansum(r.dec_cos, dtype=np.float64)),
                                abs(np.nansum(m.enc_cos, dtype=np.float64) - np.nansum(r.enc_cos, dtype=np.float64)))
                    same_s = np.array_equal(shared(m, PAPER_RULE), shared(r, PAPER_RULE))
                    row.update(speedup=ref["seconds"] / res["seconds"], same_partners=bool(same_p),
                               total_diff=float(d_tot), same_shared=bool(same_s),
                               shared_frac=float(shared(m, PAPER_RULE).mean()))
                    text = (f"{'yes' if same_p else 'NO'} / |Δ| {d_tot:.1e} / {'yes' if same_s else 'NO'} "
                            f"(shared {row['shared_frac']:.1%})")
                sp = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
                print(f"{n:>7} {method:8} {res['seconds']:8.1f} {res['peak_gib']:8.2f} {sp:>8}  {text}", flush=True)
                rows.append(row)
    if a.out:
        a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
