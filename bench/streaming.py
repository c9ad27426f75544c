"""Streamed vs cached training on the embedded default: the cost of feeding SAEs straight from the model.

    .venv/bin/python bench/streaming.py [--model smollm2-135m --hookpoint mlp_out.15 --tokens 262144
                                         --latents 4608 --k 32 --batch 1024 --seeds 2 --threads 2]

Reference (measured first, same run): the cached path — `activations.collect` writes the training
activations to a memmap (fp32), then `train_family` trains every seed on it in one pass. Against it:
the streamed path — `train_family` on a `stream.ModelSource` (the model's forward feeding a chunked
shuffle buffer; nothing written). Both train the same family (seeds, width, k, batch) on the same
tokens with the model in bf16, as the figures do; each path runs in a fresh cache folder. Printed:
seconds of each part, tokens/s, the ratio streamed / cached, the disk each wrote and peak RSS.

What to expect from counting: the streamed path runs the same forward pass the cached path runs once
(it is a shuffle of the same rows), so with one pass over the data the two differ only by the
memmap's write and read (≈ 2.3 GB per million tokens at d_model 576 in fp32). Streaming costs more
only when the same activations are read again: a second training run on a cached array costs no
forward pass, a streamed one repeats it.
"""

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hookpoint", default="mlp_out.15")
    ap.add_argument("--tokens", type=int, default=262144)
    ap.add_argument("--latents", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from saesanity import paths
    from saesanity.activations import ActivationSpec, collect
    from saesanity.corpus import token_sequences
    from saesanity.models import load_model
    from saesanity.sae import TrainConfig
    from saesanity.sae.train import MemmapSource, batch_order, train_family
    from saesanity.stream import ModelSource

    project = paths.cache_dir()
    cfgs = [TrainConfig(d_sae=a.latents, k=a.k, batch_size=a.batch, n_tokens=a.tokens, seed=s, lr=1e-3)
            for s in range(a.seeds)]
    spec = ActivationSpec(model=a.model, variant="trained", corpus="debian", n_tokens=a.tokens, seq_len=256,
                          seed=0, model_dtype="bfloat16")
    res = {}
    for name in ("cached", "streamed"):
        cache = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        for shared in ("debian", "model", "tokens"):
            if (project / shared).exists():
                (cache / shared).symlink_to(project / shared)
        os.environ["SAESANITY_CACHE"] = str(cache)
        lm = load_model(a.model, dtype="bfloat16")
        t0 = time.perf_counter()
        if name == "cached":
            acts = collect(spec, [a.hookpoint], lm=lm, progress=False)[a.hookpoint]
            t_acts = time.perf_counter() - t0
            source = MemmapSource(acts, batch_order(acts.shape[0], cfgs[0]))
        else:
            t_acts = 0.0
            toks = token_sequences(spec.corpus, lm.tokenizer, lm.tokenizer_id, spec.seq_len, seed=spec.seed)
            source = ModelSource(lm, toks[:spec.n_seqs()], a.hookpoint, batch_size=a.batch,
                                 batches_per_chunk=max(1, min(256, a.tokens // a.batch)),
                                 n_steps=a.tokens // a.batch, model_batch_size=8)
        t1 = time.perf_counter()
        train_family(source, cfgs, progress=False)
        total = time.perf_counter() - t0
        res[name] = {"activations_s": t_acts, "train_s": time.perf_counter() - t1, "total_s": total,
                     "disk_bytes": du(cache)}
        shutil.rmtree(cache)
    import platform
    import subprocess

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"CPU: {cpu} ({a.threads} threads), torch {torch.__version__}, {platform.python_version()}")
    print(f"{a.model} {a.hookpoint}, {a.tokens:,} tokens, {a.seeds} seeds x {a.latents} latents, k={a.k}, "
          f"batch {a.batch}, model in bf16")
    print("| path | collect s | train s | total s | tokens/s | disk written | vs cached |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in res.items():
        print(f"| {name}{' (reference)' if name == 'cached' else ''} | {r['activations_s']:.1f} | {r['train_s']:.1f} | "
              f"{r['total_s']:.1f} | {a.tokens / r['total_s']:,.0f} | {r['disk_bytes'] / 1e6:,.0f} MB | "
              f"{r['total_s'] / res['cached']['total_s']:.2f}x |")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
