"""SAE training throughput: our trainer vs SAELens's training classes on the same activations, same run;
and activation collection: our forward stopped at the hooked layer vs a naive full-model forward.

    .venv/bin/python bench/training.py [--d 576 --latents 4608 --k 32 --batch 4096 --steps 20 --reps 3]
                                       [--threads 2] [--acts acts.npy] [--no-activations] [--breakdown]

Training, per architecture (TopK with AuxK; an L1 ReLU SAE), one timed `--steps`-step run per
repetition after a 3-step warm-up, median of `--reps`; tokens/s = steps · batch / seconds:
- ours: `saesanity.sae.train_sae` (batch gathering, AuxK with dead-latent tracking, decoder
  gradient projection and renormalisation, logging: the loop every figure uses);
- SAELens: `SAETrainer(...).fit()` with `TopKTrainingSAE` / `StandardTrainingSAE` (its defaults
  otherwise: wandb off, no checkpoints), fed the same batches in the same order. TopK is run with
  SAELens's dense activations (its default) and with `use_sparse_activations=True`.
Both get the same activations (`--acts`, an [N, d] float32 .npy; by default N(0, 1) rows — the
step's cost does not depend on the values), width, k, batch, learning rate and thread count.

First, the TopK step against the GEMM rate measured in the same run (fp32, and bf16 autocast where the CPU has
it): its FLOPs as counted in `topk_step_flops` per second over the encoder product's FLOP/s (into a preallocated
output, timed in turn with the step), the step timed marginally (`marginal_step_seconds`: a run's set-up is not
a step's cost); `--breakdown` adds where the step's time goes. Then both trainers in
each precision (SAELens with its own `autocast` for bf16).

Activation collection: SmolLM2-135M (the embedded default) on random token ids, tokens/s of
`activations.run_to_hookpoints` (stops after the hooked layer) vs the whole model with its LM head.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from saesanity import machine


def our_run(acts, arch, a, steps, autocast="none"):
    from saesanity.sae import TrainConfig, train_sae

    cfg = TrainConfig(d_sae=a.latents, k=a.k, batch_size=a.batch, n_tokens=steps * a.batch, lr=a.lr,
                      architecture=arch, warmup_steps=1, log_every=10, auxk_alpha=1 / 32, autocast=autocast)
    t = time.perf_counter()
    train_sae(acts, cfg, progress=False)
    return time.perf_counter() - t


def saelens_run(acts, arch, a, steps, sparse=False, autocast="none"):
    from sae_lens import SAETrainer, StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, \
        TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    from saesanity.sae.train import TrainConfig, batch_order

    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=acts.shape[1], d_sae=a.latents, k=a.k,
                                                    aux_loss_coefficient=1 / 32, use_sparse_activations=sparse))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(d_in=acts.shape[1], d_sae=a.latents, l1_coefficient=1.0))
    order = batch_order(acts.shape[0], TrainConfig(d_sae=a.latents, k=a.k, batch_size=a.batch,
                                                   n_tokens=steps * a.batch))
    batches = (torch.from_numpy(np.asarray(acts[o], dtype=np.float32)) for o in order)
    cfg = SAETrainerConfig(total_training_samples=steps * a.batch, train_batch_size_samples=a.batch, lr=a.lr,
                           lr_end=a.lr, lr_warm_up_steps=1, logger=LoggingConfig(log_to_wandb=False),
                           autocast=autocast == "bf16")
    t = time.perf_counter()
    SAETrainer(cfg, sae, batches).fit()
    return time.perf_counter() - t


def gemm_seconds(a, dtype) -> float:
    """Seconds of the encoder's product [B, D] · [D, F] in `dtype`, into a preallocated output (the machine's matmul
    rate, without the page faults a fresh 10-80 MB output costs on first touch), median of 5."""
    x = torch.randn(a.batch, a.d).to(dtype)
    w = torch.randn(a.d, a.latents).to(dtype)
    out = torch.empty(a.batch, a.latents, dtype=dtype)
    torch.mm(x, w, out=out)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(x, w, out=out)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def topk_step_flops(a) -> float:
    """FLOPs of one TopK step as our trainer computes it (no dead latents): the dense encoder product 2·B·D·F,
    and four sparse passes of 2·B·K·D each (decoder forward, ∂ of the selected activations, ∂W_dec, ∂W_enc).
    TopK, the bias, Adam and the renormalisation are memory passes: counted in time, not in FLOPs."""
    return 2 * a.batch * a.d * a.latents + 4 * 2 * a.batch * a.k * a.d


PRECISIONS = (("fp32", torch.float32, "none"), ("bf16 autocast", torch.bfloat16, "bf16"))


def precisions(a):
    """fp32, and bf16 autocast where the CPU has bf16 matrix instructions (`machine.bf16_fast`) or `--bf16` asks
    for it: without them a bf16 GEMM is emulated (≈ 1 GFLOP/s against fp32's ≈ 150 on an AVX2-only EPYC), and
    the default profile trains in fp32 there."""
    if a.bf16 or machine.bf16_fast():
        return PRECISIONS
    print("  bf16 autocast: not measured, this CPU has no bf16 matrix instructions (--bf16 measures it anyway)")
    return PRECISIONS[:1]


def gemm_table(a, acts):
    """The TopK step's achieved FLOP/s against the GEMM rate, fp32 and bf16: the GEMM and the step are timed in
    turn, `reps` times, so both see the same state of a shared machine; medians."""
    flops = topk_step_flops(a)
    print(f"  TopK step against this machine's GEMM rate ({flops / 1e9:.2f} GFLOP a step, "
          f"{100 * 2 * a.batch * a.d * a.latents / flops:.0f}% of it the encoder product)")
    for label, dtype, autocast in precisions(a):
        our_run(acts, "topk", a, 3, autocast)  # warm-up
        gemm, step = [], []
        for _ in range(a.reps):
            gemm.append(gemm_seconds(a, dtype))
            step.append(marginal_step_seconds(acts, a, autocast))
        rate = 2 * a.batch * a.d * a.latents / statistics.median(gemm)
        achieved = flops / statistics.median(step)
        print(f"    {label:14s} GEMM {rate / 1e9:7.1f} GFLOP/s   step {achieved / 1e9:7.1f} GFLOP/s = "
              f"{100 * achieved / rate:5.1f}% of it   ({a.batch / statistics.median(step):,.0f} tok/s, "
              f"{1e3 * statistics.median(step):.1f} ms a step)")
        if a.breakdown:
            breakdown(acts, a, autocast, statistics.median(step))


def marginal_step_seconds(acts, a, autocast) -> float:
    """Seconds of one TopK step, marginal: (T(steps) − T(steps / 4)) / (the steps between), so the run's set-up
    (the SAE's initialisation, the optimiser, the batch order, the final evaluation) is not counted in the step."""
    short = max(1, a.steps // 4)
    if a.steps <= short:
        raise SystemExit(f"--steps {a.steps}: the marginal step time needs at least 2 steps")
    return (our_run(acts, "topk", a, a.steps, autocast) - our_run(acts, "topk", a, short, autocast)) / (a.steps - short)


PARTS = {  # aten op -> the part of the TopK step it is (topk.py's module docstring)
    "aten::mm": "encoder product B·D·F", "aten::topk": "top-k over [B, F]", "saesanity::topk_rows": "top-k over [B, F]",
    "aten::sparse_sampled_addmm": "sampled products: exact values (bf16), ∂vals",
    "aten::_embedding_bag_forward_only": "decoder (embedding_bag)", "aten::_embedding_bag": "∂W_dec, ∂W_enc bags",
    "aten::_fused_adam_": "Adam (fused)", "aten::sort": "sorting the selection", "aten::argsort": "sorting the selection",
}


def breakdown(acts, a, autocast, step_s):
    """Where a TopK step's time goes (torch.profiler self time over `steps` steps, by part)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        our_run(acts, "topk", a, a.steps, autocast)
    parts: dict[str, float] = {}
    for ev in prof.key_averages():
        parts[PARTS.get(ev.key, "other ops")] = parts.get(PARTS.get(ev.key, "other ops"), 0.0) + ev.self_cpu_time_total
    total = sum(parts.values())
    for name, us in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"        {name:44s} {us / total * step_s * 1e3:6.1f} ms  {100 * us / total:4.0f}%")


def timed(fn, a):
    fn(3)  # warm-up: allocator, thread pool, first-call overheads
    return statistics.median(fn(a.steps) for _ in range(a.reps))


def training_table(a):
    acts = np.load(a.acts, mmap_mode="r") if a.acts else \
        np.random.default_rng(0).standard_normal((a.steps * a.batch, a.d), dtype=np.float32)
    print(f"SAE training on {machine.describe(machine.info())}, d={acts.shape[1]} latents={a.latents} k={a.k} "
          f"batch={a.batch}, {a.steps} steps x {a.reps} reps (median)")
    gemm_table(a, acts)
    for arch, label in (("topk", "TopK + AuxK"), ("relu", "ReLU + L1")):
        for prec, _, autocast in precisions(a):
            res = {"ours": timed(lambda s: our_run(acts, arch, a, s, autocast), a),
                   "SAELens": timed(lambda s: saelens_run(acts, arch, a, s, autocast=autocast), a)}
            failed = {}
            if arch == "topk":
                try:
                    res["SAELens (sparse activations)"] = timed(
                        lambda s: saelens_run(acts, arch, a, s, sparse=True, autocast=autocast), a)
                except Exception as e:  # noqa: BLE001 — report it and keep measuring
                    failed["SAELens (sparse activations)"] = f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
            best_ref = min(v for k, v in res.items() if k != "ours")
            print(f"  {label}, {prec}")
            for name, sec in res.items():
                tps = a.steps * a.batch / sec
                print(f"    {name:30s} {tps:9,.0f} tok/s   ours is {sec / res['ours']:5.2f}x this")
            for name, why in failed.items():
                print(f"    {name:30s} failed here: {why}")
            print(f"    ours vs the fastest SAELens setting that runs: {best_ref / res['ours']:.2f}x")


def activation_table(a):
    from common import early_stop_rates

    print(f"Activation collection, smollm2-135m, batch 8x256, {torch.get_num_threads()} threads")
    res = early_stop_rates("smollm2-135m", "mlp_out.15", 8, 256, a.reps)
    ref = next(iter(res.values()))
    for name, tps in res.items():
        print(f"    {name:36s} {tps:9,.0f} tok/s   ratio {tps / ref:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--d", type=int, default=576)
    ap.add_argument("--latents", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--acts", default=None)
    ap.add_argument("--no-activations", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="measure bf16 autocast even where the CPU lacks bf16 "
                    "matrix instructions (slow: emulated)")
    ap.add_argument("--breakdown", action="store_true", help="where the TopK step's time goes, by part")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    training_table(a)
    if not a.no_activations:
        activation_table(a)


if __name__ == "__main__":
    main()
