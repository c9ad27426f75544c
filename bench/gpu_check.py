"""GPU check: every pipeline step on CUDA, and the numbers that size the paper profiles (≤ 8 min on one GPU).

    .venv/bin/python bench/gpu_check.py                   # on a GPU machine (bench/gpu_check.sh wraps it)
    .venv/bin/python bench/gpu_check.py --device cpu --quick   # the same code path, tiny, on a CPU (tests)

1. smoke: a tiny GPT-NeoX (Pythia's architecture, random weights: the device has no internet) on CUDA —
   activations collected, a 2-seed family trained from the cached array and from the model's forward
   (`stream.ModelSource`), evaluated (FVU, L0, firing frequency), matched, and spliced into the
   forward pass (CE / KL scores): each step's wall time, and that its outputs are finite.
2. SAE training throughput at the Paulo & Belrose size: d = 768, 32,768 latents, k = 32, batch 65,536,
   activations resident on the device (a GPU tensor source, so PCIe is not measured), tokens/s with
   TF32 on and off; and the matmul rate of the encoder GEMM alone in the same run (the reference).
3. Peak memory of a training step at 131,072 latents (Fig. 5's largest size).
4. Activation throughput of a Pythia-160M-shaped model (random init, bf16) stopped after layer 6,
   sequences of 2,048, batch 32: tokens/s — with 2. this sizes the streamed paper runs.
5. With two or more GPUs: a 2-process NCCL run of the family trainer (`torchrun`), checked against one.
Prints one Markdown table per part; copy them into bench/RESULTS.md with the GPU name printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))


class DeviceSource:
    """Batches sliced from one device-resident tensor [N, D] in a fixed random order (bench only)."""

    def __init__(self, x: torch.Tensor, batch_size: int, n_steps: int, seed: int = 0):
        self.x, self.batch_size, self.n_steps, self.d_in = x, batch_size, n_steps, x.shape[1]
        g = torch.Generator().manual_seed(seed)
        self.order = [torch.randint(0, x.shape[0], (batch_size,), generator=g).sort().values.to(x.device)
                      for _ in range(n_steps)]

    def batch(self, step, rank=0, world=1):
        idx = self.order[step]
        per = self.batch_size // world
        return self.x.index_select(0, idx[rank * per:(rank + 1) * per])

    def init_batch(self, rank=0, world=1):
        return self.x.index_select(0, self.order[0])


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def neox(d, layers, heads, ffn, vocab=50304, seed=0):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
                                            num_attention_heads=heads, intermediate_size=ffn, rotary_pct=0.25,
                                            max_position_embeddings=2048))


def tiny_model_dir(tmp: Path) -> Path:
    """A 3-layer GPT-NeoX with SmolLM2's tokenizer if it is cached, else a character tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp / "tiny-neox"
    vocab = {"<eos>": 0, **{chr(32 + i): i + 1 for i in range(95)}, "<unk>": 96}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    neox(64, 3, 4, 128, vocab=97).save_pretrained(folder)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(folder)
    return folder


def part_smoke(device: str, quick: bool) -> list[tuple[str, float, str]]:
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        return _smoke(device, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _smoke(device: str, tmp: Path) -> list[tuple[str, float, str]]:
    from saesanity.activations import ActivationSpec, collect
    from saesanity.baselines import spliced_scores
    from saesanity.matching import match_pair
    from saesanity.models import load_model
    from saesanity.runs import evaluate, latent_frequencies
    from saesanity.sae import TrainConfig
    from saesanity.sae.train import MemmapSource, batch_order, train_family
    from saesanity.stream import ModelSource

    rows = []
    os.environ["SAESANITY_CACHE"] = str(tmp / "cache")
    folder = tiny_model_dir(tmp)
    corpus = tmp / "corpus.jsonl"
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "the", "a", "of", "model", "sparse", "latent"]
    corpus.write_text("\n".join(json.dumps({"text": " ".join(rng.choice(words, 40))}) for _ in range(4000)))
    spec = ActivationSpec(model=str(folder), variant="trained", corpus=f"hf:{corpus}", n_tokens=32768, seq_len=65,
                          seed=0)
    lm = load_model(str(folder), device=device)
    acts, s = timed(lambda: collect(spec, ["mlp_out.1"], lm=lm, device=device, progress=False)["mlp_out.1"], device)
    rows.append(("collect 32K activations (hf: jsonl corpus)", s, f"{acts.shape}"))
    cfgs = [TrainConfig(d_sae=256, k=8, batch_size=1024, n_tokens=32768, seed=i) for i in range(2)]
    fam, s = timed(lambda: train_family(MemmapSource(acts, batch_order(acts.shape[0], cfgs[0])), cfgs,
                                        progress=False, device=device), device)
    rows.append(("train 2 SAEs from the cached array", s, f"final FVU {fam[0][1][-1]['fvu']:.3f}"))
    from saesanity.corpus import token_sequences

    toks = token_sequences(spec.corpus, lm.tokenizer, lm.tokenizer_id, 65, max_tokens=spec.n_seqs() * 65)
    src = ModelSource(lm, toks, "mlp_out.1", batch_size=1024, batches_per_chunk=8, n_steps=32, device=device)
    streamed, s = timed(lambda: train_family(src, cfgs, progress=False, device=device), device)
    rows.append(("train 2 SAEs from the model forward (streamed)", s, f"final FVU {streamed[0][1][-1]['fvu']:.3f}"))
    ev, s = timed(lambda: evaluate(fam[0][0], acts, device=device), device)
    rows.append(("evaluate FVU / L0 on the device", s, f"FVU {ev['fvu']:.3f}, L0 {ev['l0']:.1f}"))
    fr, s = timed(lambda: latent_frequencies(fam[0][0], acts, device=device), device)
    rows.append(("firing frequencies", s, f"dead {float((fr == 0).mean()):.2f}"))
    m, s = timed(lambda: match_pair(fam[0][0], fam[1][0]), device)
    rows.append(("Hungarian matching (CPU)", s, f"mean matched dec cos {float(np.mean(m[0].dec_cos)):.3f}"
                 if hasattr(m[0], "dec_cos") else "done"))
    sc, s = timed(lambda: spliced_scores(lm, {"mlp_out.1": fam[0][0].to(device)}, np.asarray(toks[:64]),
                                         batch_size=16, progress=False), device)
    r = sc["mlp_out.1"]
    rows.append(("CE / KL with the SAE spliced in", s, f"CE score {r['ce_loss_score']:.3f}, KL score {r['kl_score']:.3f}"))
    bad = [name for name, _, note in rows if "nan" in note.lower()]
    if bad:
        raise SystemExit(f"non-finite outputs in: {bad}")
    return rows


def part_train(device: str, quick: bool) -> list[tuple[str, float, str]]:
    from saesanity.sae import TrainConfig
    from saesanity.sae.train import train_family

    d, f, k, b, steps = (768, 32768, 32, 65536, 20) if not quick else (64, 512, 8, 1024, 4)
    x = torch.randn(4 * b, d, device=device)
    rows = []
    a, w = torch.randn(b, d, device=device), torch.randn(d, f, device=device)
    for tf32 in (False, True):
        if device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = tf32
        (a @ w)
        _, s = timed(lambda: [a @ w for _ in range(5)], device)
        gemm = 5 * 2 * b * d * f / s / 1e12
        cfg = TrainConfig(d_sae=f, k=k, batch_size=b, n_tokens=steps * b, warmup_steps=1, log_every=10)
        src = DeviceSource(x, b, steps)
        train_family(DeviceSource(x, b, 2), [TrainConfig(d_sae=f, k=k, batch_size=b, n_tokens=2 * b)],
                     progress=False, device=device, tf32=tf32)  # warm-up
        _, s = timed(lambda: train_family(src, [cfg], progress=False, device=device, tf32=tf32), device)
        rows.append((f"TopK SAE step, d={d}, {f:,} latents, k={k}, batch {b:,}, TF32 {'on' if tf32 else 'off'}",
                     s / steps, f"{steps * b / s:,.0f} tok/s; encoder GEMM alone {gemm:.1f} TFLOP/s"))
    return rows


def part_memory(device: str, quick: bool) -> list[tuple[str, float, str]]:
    from saesanity.sae import TrainConfig
    from saesanity.sae.train import train_family

    d, f, k, b = (768, 131072, 32, 65536) if not quick else (64, 2048, 8, 1024)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    x = torch.randn(2 * b, d, device=device)
    _, s = timed(lambda: train_family(DeviceSource(x, b, 3), [TrainConfig(d_sae=f, k=k, batch_size=b, n_tokens=3 * b)],
                                      progress=False, device=device), device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return [(f"3 steps at {f:,} latents, batch {b:,}", s / 3, f"peak {peak:.1f} GiB allocated")]


def part_activations(device: str, quick: bool) -> list[tuple[str, float, str]]:
    from saesanity.activations import run_to_hookpoints
    from saesanity.models import LoadedModel

    d, layers, heads, ffn, seq, batch = (768, 12, 12, 3072, 2048, 32) if not quick else (64, 4, 4, 128, 128, 4)
    model = neox(d, layers, heads, ffn).to(device=device, dtype=torch.bfloat16).eval()
    lm = LoadedModel(model=model, tokenizer=None, spec="pythia-160m-shaped", variant="trained", seed=0, tokenizer_id="")
    ids = torch.randint(0, 50304, (batch, seq), device=device)
    run_to_hookpoints(lm, ids, ["mlp_out.6" if not quick else "mlp_out.2"])
    reps = 10 if not quick else 2
    _, s = timed(lambda: [run_to_hookpoints(lm, ids, ["mlp_out.6" if not quick else "mlp_out.2"])
                          for _ in range(reps)], device)
    return [(f"Pythia-160M-shaped forward to layer 6, bf16, {batch} x {seq}", s / reps,
             f"{reps * ids.numel() / s:,.0f} tok/s")]


def part_ddp(device: str, quick: bool) -> list[tuple[str, float, str]]:
    n = torch.cuda.device_count() if device.startswith("cuda") else 0
    if n < 2:
        return [("2-process NCCL run", 0.0, f"skipped: {n} GPU(s)")]
    out = Path(tempfile.mkdtemp(prefix="gpu-ddp-"))
    env = dict(os.environ, DIST_DEVICE="cuda", PYTHONPATH=str(ROOT / "lib"))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "tests" / "dist_train.py"), str(out / "two.pt"), "-", "topk,relu"],
                       env=env, capture_output=True, text=True, timeout=300)
    s = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return [("2-process NCCL run (tests/dist_train.py)", s, "ok" if r.returncode == 0 else f"FAILED: {r.stderr[-500:]}")]


PARTS = {"smoke": part_smoke, "train": part_train, "memory": part_memory, "activations": part_activations,
         "ddp": part_ddp}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check of the script itself)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {list(PARTS)}")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here; run with --device cpu --quick to check the script")
    name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    print(f"# gpu_check on {name}, torch {torch.__version__}, {'quick' if a.quick else 'full'} sizes\n")
    failed = []
    for part in a.parts.split(","):
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; valid: {list(PARTS)}")
        t = time.perf_counter()
        try:
            rows = PARTS[part](a.device, a.quick)
        except Exception as err:  # report every part, fail at the end
            rows = [(f"{part}: FAILED", 0.0, f"{type(err).__name__}: {err}")]
            failed.append(part)
        print(f"## {part} ({time.perf_counter() - t:.0f} s)\n\n| step | seconds | result |\n|---|---:|---|")
        for step, s, note in rows:
            print(f"| {step} | {s:.3f} | {note} |")
        print()
        sys.stdout.flush()
    if failed:
        raise SystemExit(f"failed parts: {failed}")


if __name__ == "__main__":
    main()
