"""What a profile costs before it runs: disk, GPU memory and GPU-hours of its SAE training, from its parameters.

    python -m saesanity.estimate <stem> [<profile>]     # one notebook (profile `paper` by default)
    python -m saesanity.estimate --table                # the README table for every `paper` profile
    python -m saesanity.estimate --readme               # rewrite that table in README.md (a test checks it)

Counted, not measured — every number is an estimate until `bench/gpu_check.py` and a real run say
otherwise. Definitions (tokens T, hookpoint width d, latents F, batch B):

- **Forward FLOPs a token** up to the deepest hooked layer L: 2 · (weights of layers 0…L) + the
  attention products 4 · (L+1) · d · ctx/2 (causal: half the context on average), from the model's
  published shape (`SHAPES`).
- **SAE FLOPs a token**: TopK / BatchTopK 2 · d · F (the dense encoder; its sparse backward and the
  decoder cost k·d, negligible); ReLU 6 · d · F (forward and two backward products), Gated 1.5× that.
- **GPU-hours** = Σ over passes (T · (forward + Σ its SAEs)) / `RATE` FLOP/s. `RATE` = 100 TFLOP/s is
  an assumed sustained rate for one H100-class GPU (≈ 20–40 % of its bf16 / TF32 peak); the
  memory-bound TopK over [B, F] is not counted. Divide by the GPU count for torchrun runs.
- **Disk**: token rows (2 bytes a token for vocabularies ≤ 65,536, else 4), the cached held-out
  activations (n_eval_tokens · d · s bytes per hookpoint and variant, s = 4 for `acts_dtype` float32,
  2 for float16), every SAE (2 · d · F · 4 bytes) and, while one trains, its checkpoint (3× that:
  weights and Adam's two moments). Streamed training activations take no disk; with
  `activations: cached` they take T · d · s bytes per hookpoint.
- **GPU memory** (largest training pass): every member's weights, gradients and Adam state
  (16 · 2 · d · F bytes each), the shuffle buffer (stream_buffer_tokens · d · 4), and the largest
  member's dense pre-activations and their TopK workspace (2 · B · F · 4) — the members step one
  after another, so only one member's batch tensors live at a time.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

GPU_START, GPU_END = "<!-- gpu-table:start -->", "<!-- gpu-table:end -->"
RATE = 100e12  # FLOP/s sustained on one H100-class GPU (an assumption; bench/gpu_check.py measures)


@dataclass(frozen=True)
class Shape:
    d: int  # d_model
    layers: int
    ffn: int  # MLP hidden width
    attn_weights: int  # attention weights a layer
    mlp_weights: int  # MLP weights a layer
    vocab: int


def _gpt(d: int, layers: int, vocab: int) -> Shape:  # GPT-2 / GPT-NeoX: 4d² attention, 2·d·4d MLP
    return Shape(d, layers, 4 * d, 4 * d * d, 8 * d * d, vocab)


SHAPES = {  # published configs (hub config.json of each model)
    "EleutherAI/pythia-70m": _gpt(512, 6, 50304),
    "EleutherAI/pythia-160m": _gpt(768, 12, 50304),
    "gpt2": _gpt(768, 12, 50257),
    # Llama: q, o (d²) and k, v (d · d·kv/heads) projections; gate, up, down (3 · d · ffn)
    "smollm2-135m": Shape(576, 30, 1536, 2 * 576 * 576 + 2 * 576 * 192, 3 * 576 * 1536, 49152),
}


def forward_flops(shape: Shape, last_layer: int, ctx: int) -> float:
    """FLOPs a token of the forward pass stopped after `last_layer`."""
    n = last_layer + 1
    return 2.0 * n * (shape.attn_weights + shape.mlp_weights) + 4.0 * n * shape.d * ctx / 2


def sae_flops(d: int, f: int, architecture: str = "topk") -> float:
    """Training FLOPs a token of one SAE (module docstring)."""
    if architecture in ("topk", "batchtopk", "matryoshka"):
        return 2.0 * d * f
    return 6.0 * d * f * (1.5 if architecture == "gated" else 1.0)


@dataclass
class Pass:
    """One pass over `tokens` at one hookpoint (layer), training these SAEs (latents, architecture)."""

    tokens: int
    layer: int
    saes: list[tuple[int, str]]


def _layer(hookpoint: str) -> int:
    return int(hookpoint.rsplit(".", 1)[1])


def passes(stem: str, P) -> list[Pass]:
    """The training passes `saesanity.pretrain` (or the notebook) makes for `stem` under `P`. With
    `trainer: sparsify` a TopK pass trains the seeds of one (d_sae, k, n_tokens) at every hookpoint that
    needs them: one sparsify run each (`runs.SparsifyRun`); the other architectures share one pass of ours.
    With ours on streamed activations, several hookpoints' SAEs share one pass."""
    from . import params

    sparsify = getattr(P, "trainer", "ours") == "sparsify"
    if sparsify and stem in ("paulo_fig5_overlap_vs_size_k_tokens", "paulo_figA4_mean_cosines_vs_size_k_tokens"):
        L, pair = _layer(P.hookpoint), [(P.d_sae, "topk")] * 2
        return ([Pass(P.n_tokens, L, [(s, "topk")] * 2) for s in P.sizes] + [Pass(P.n_tokens, L, pair) for _ in P.ks]
                + [Pass(t, L, pair) for t in P.train_tokens])
    if sparsify and stem == "paulo_fig4_overlap_vs_layer_position_arch":
        # one run per size over every hookpoint of that size (`runs.prefill_sparsify`); the TopK pair at
        # P.hookpoint is one of them when that hookpoint is among the layers
        out = []
        for size in sorted(set(P.layer_sizes) | {P.d_sae}):
            hooks = (len(P.layers) if size in P.layer_sizes else 0) + \
                (len(P.layers) * (len(P.kinds) - 1) if size == P.d_sae else 0)
            out.append(Pass(P.n_tokens, max(P.layers), [(size, "topk")] * 2 * hooks))
        others = [(P.d_sae, a) for a in P.architectures if a != "topk"] * 2
        return out + _calibration_passes(P) + ([Pass(P.n_tokens, _layer(P.hookpoint), others)] if others else [])
    if stem in ("paulo_fig5_overlap_vs_size_k_tokens", "paulo_figA4_mean_cosines_vs_size_k_tokens"):
        L, two = _layer(P.hookpoint), 2
        return [Pass(P.n_tokens, L, [(s, "topk") for s in P.sizes] * two),
                Pass(P.n_tokens, L, [(P.d_sae, "topk")] * len(P.ks) * two),
                Pass(max(P.train_tokens), L, [(P.d_sae, "topk")] * two)] + \
            ([Pass(P.n_tokens, L, [(P.d_sae, "topk")] * (len(P.seeds) - 2))] if len(P.seeds) > 2 else [])  # base floor
    if stem == "consistency_matryoshka":  # Fig. 1's TopK seeds, and a pair of each other architecture
        others = [(P.d_sae, a) for a in P.architectures if a != "topk"] * 2
        return [Pass(P.n_tokens, _layer(P.hookpoint), [(P.d_sae, "topk")] * len(P.seeds))] + \
            ([Pass(P.n_tokens, _layer(P.hookpoint), others)] if others else [])
    if stem == "consistency_seeds" and P.data_nulls:  # + the seed pair at null_tokens: on the real data (free: a
        # snapshot, unless sparsify trains it) and on each data null (generated: no model forward, layer -1)
        pair = [(P.d_sae, "topk")] * 2
        return [Pass(P.n_tokens, _layer(P.hookpoint), [(P.d_sae, "topk")] * len(P.seeds))] + \
            ([Pass(P.null_tokens, _layer(P.hookpoint), pair)] if sparsify else []) + \
            [Pass(P.null_tokens, -1, pair) for _ in P.data_nulls]
    if stem in params.SEED_FAMILY or stem in ("paulo_fig3_interp_vs_sharing", "paulo_table1_unpaired_explanations"):
        return [Pass(P.n_tokens, _layer(P.hookpoint), [(P.d_sae, "topk")] * len(P.seeds))]
    # sparsify's runs read a stream too (`runs.data_for`)
    streamed = sparsify or getattr(P, "activations", "cached") == "streamed"
    if stem == "paulo_fig4_overlap_vs_layer_position_arch":
        out = [Pass(P.n_tokens, layer, [(s, "topk") for s in P.layer_sizes] * 2) for layer in P.layers]
        out += [Pass(P.n_tokens, layer, [(P.d_sae, "topk")] * 2) for layer in P.layers for _ in P.kinds[1:]]
        if streamed:  # every hookpoint's pairs in one pass (`runs._train_streamed_hookpoints`)
            out = [Pass(P.n_tokens, max(P.layers), [sae for p in out for sae in p.saes])]
        floor = [(P.d_sae, "topk")] * max(len(P.seeds) - 2, 0)  # the noise floor's seeds at (c)'s TopK point
        return out + _calibration_passes(P) + [Pass(P.n_tokens, _layer(P.hookpoint),
                                                    [(P.d_sae, a) for a in P.architectures] * 2 + floor)]
    if stem.startswith("heap_") and hasattr(P, "variants"):
        frozen = [(P.d_sae, "topk")] * len(getattr(P, "frozen", []))  # the trained model's frozen-weight baselines
        if streamed:  # every layer in one pass (or sparsify run) per variant; the frozen ones in a pass of their own
            return [Pass(P.n_tokens, max(P.layers), [(P.d_sae, "topk")] * len(P.layers)) for _ in P.variants] + \
                ([Pass(P.n_tokens, max(P.layers), frozen * len(P.layers))] if frozen else [])
        # cached: the frozen SAEs read the trained model's activations, collected once
        return [Pass(P.n_tokens, layer, [(P.d_sae, "topk")] + (frozen if v == "trained" else []))
                for v in P.variants for layer in P.layers]
    if stem.startswith("leask_"):  # leask_matryoshka: a Matryoshka family beside the TopK one
        archs = ["topk", "matryoshka"] if stem == "leask_matryoshka" else ["topk"]
        families = 2 if stem == "leask_novel_fraction" else 1  # its noise floor: the family with a second seed
        return [] if P.release else [Pass(P.n_tokens, _layer(P.hookpoint),
                                          [(s, a) for a in archs for s in P.sizes] * families)]
    return []


def _calibration_passes(P) -> list[Pass]:
    """Fig. 4's short runs that set each L1/L0 architecture's coefficient (`runs.calibrate_sparsity`)."""
    return [Pass(P.calib_tokens, _layer(P.hookpoint), [(P.d_sae, a)]) for a in P.architectures
            if a in ("relu", "gated", "jumprelu") for _ in range(P.calib_runs)]


@dataclass
class Estimate:
    stem: str
    gpu_hours: float
    disk_gb: float
    gpu_mem_gb: float
    note: str


def _store_bytes(P) -> int:
    """Bytes a cached activation value takes (`acts_dtype`, a numpy dtype name)."""
    return np.dtype(getattr(P, "acts_dtype", "float32")).itemsize


def estimate(stem: str, profile: str = "paper") -> Estimate:
    """Disk, GPU memory and GPU-hours of `stem`'s SAE training under `profile` (module docstring)."""
    from . import params

    P = params.load(stem, profile)
    if stem == "consistency_synthetic":
        return _estimate_synthetic(P)
    model = getattr(P, "model", None)
    if model not in SHAPES:
        return Estimate(stem, 0.0, 0.0, 0.0, "no SAE training" if not passes(stem, P) else f"unknown shape {model}")
    shape = SHAPES[model]
    ps = passes(stem, P)
    if not ps:
        note = f"SAEs from the release {P.release}" if getattr(P, "release", "") else "no SAE training"
        note += "; explanations and scores by the chat model" if hasattr(P, "llm_model") else ""
        held = P.n_eval_tokens * shape.d * _store_bytes(P) if hasattr(P, "n_eval_tokens") else 0
        return Estimate(stem, 0.0, held / 1e9, 0.0, note)
    ctx = P.seq_len
    flops = sum(p.tokens * (forward_flops(shape, p.layer, ctx) + sum(sae_flops(shape.d, f, a) for f, a in p.saes))
                for p in ps)
    tok_bytes = 2 if shape.vocab <= 1 << 16 else 4
    n_hooks = len(getattr(P, "layers", [None])) * len(getattr(P, "kinds", [None]))  # hookpoints evaluated
    n_variants = len(getattr(P, "variants", [None]))
    held = P.n_eval_tokens * shape.d * _store_bytes(P) * n_hooks * n_variants
    saes = sum(2 * shape.d * f * 4 for p in ps for f, _ in p.saes)
    biggest = max(ps, key=lambda p: sum(f for f, _ in p.saes))
    ckpt = 3 * sum(2 * shape.d * f * 4 for f, _ in biggest.saes)
    acts = 0 if getattr(P, "activations", "cached") == "streamed" else \
        max(p.tokens for p in ps) * shape.d * _store_bytes(P) * n_hooks
    disk = max(p.tokens for p in ps) * tok_bytes + held + saes + ckpt + acts
    train_mem = _training_memory(shape.d, [f for f, _ in biggest.saes], P.batch_size)
    buffer = getattr(P, "stream_buffer_tokens", 0) * shape.d * 4
    note = f"{len(ps)} pass(es), {sum(len(p.saes) for p in ps)} SAEs"
    if getattr(P, "trainer", "ours") == "sparsify":
        note += f" (TopK by sparsify, {P.sparsify_recipe})"
    if hasattr(P, "llm_model"):
        note += "; + the chat model's calls"
    return Estimate(stem, flops / RATE / 3600, disk / 1e9, (train_mem + buffer) / 1e9, note)


def _training_memory(d: int, widths: list[int], batch_size: int) -> int:
    """Bytes of a family of SAEs (`widths` latents each, d_model `d`) trained together: each member's two [d, f]
    matrices with their gradients and Adam moments in fp32 (16 bytes a weight), and two [batch, widest] fp32
    activations of the step."""
    return sum(16 * 2 * d * f for f in widths) + 2 * batch_size * max(widths) * 4


def _estimate_synthetic(P) -> Estimate:
    """The synthetic ground-truth sweep (saesanity.synthetic): no language model; every (k, seed) SAE on the same
    generated rows, which `synthetic.sweep` holds in host memory (float32) beside the held-out rows when cached,
    and generates batch by batch when streamed (`synthetic.SyntheticSource`)."""
    n_saes = len(P.ks) * len(P.seeds)
    flops = P.n_tokens * n_saes * sae_flops(P.hidden_dim, P.d_sae, "topk")
    saes = n_saes * 2 * P.hidden_dim * P.d_sae * 4
    if P.activations == "streamed":
        rows = (P.batch_size + P.n_eval_tokens) * P.hidden_dim * 4
        where = f"generated batch by batch: {rows / 1e9:.1f} GB of rows in host memory (one batch + the held-out rows)"
    else:
        rows = (P.n_tokens + P.n_eval_tokens) * P.hidden_dim * 4
        where = f"the generated rows, {rows / 1e9:.1f} GB, are held in host memory"
    note = f"1 pass, {n_saes} SAEs on synthetic data (no language model); {where}"
    return Estimate("consistency_synthetic", flops / RATE / 3600, (saes + P.n_eval_tokens * P.hidden_dim * 4) / 1e9,
                    _training_memory(P.hidden_dim, [P.d_sae] * n_saes, P.batch_size) / 1e9, note)


def table(profile: str = "paper") -> str:
    """Markdown: per notebook, the command and its estimated disk, GPU memory and GPU-hours."""
    from .paths import NOTEBOOKS_DIR

    lines = ["| notebook | GPU-hours (est.) | disk (est.) | GPU memory (est.) | trains |",
             "|---|---:|---:|---:|---|"]
    for stem in sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")):
        e = estimate(stem, profile)
        lines.append(f"| `{stem}` | {e.gpu_hours:,.1f} | {e.disk_gb:,.0f} GB | {e.gpu_mem_gb:,.1f} GB | {e.note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m saesanity.estimate", description=__doc__.split("\n\n")[0])
    ap.add_argument("stem", nargs="?")
    ap.add_argument("profile", nargs="?", default="paper")
    ap.add_argument("--table", action="store_true", help="the README table for every notebook")
    ap.add_argument("--readme", action="store_true", help="rewrite the table in README.md")
    a = ap.parse_args(argv)
    if a.readme:
        from .paths import REPO_ROOT
        from .readme import updated_readme

        path = REPO_ROOT / "README.md"
        path.write_text(updated_readme(path.read_text(), table(), GPU_START, GPU_END))
        return 0
    if a.table or not a.stem:
        print(table(a.profile))
        return 0
    e = estimate(a.stem, a.profile)
    print(f"{e.stem} [{a.profile}]: {e.gpu_hours:,.1f} GPU-hours at {RATE / 1e12:.0f} TFLOP/s, disk {e.disk_gb:,.1f} GB, "
          f"GPU memory {e.gpu_mem_gb:,.1f} GB ({e.note}) — estimates")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
