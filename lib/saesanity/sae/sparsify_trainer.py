"""TopK SAEs trained by EleutherAI's sparsify (the trainer of Paulo & Belrose 2025 and Heap et al. 2025).

`train_sparsify(lm, tokens, hookpoints, seeds, out)` hands one model (a `models.LoadedModel`, so every
variant — re-randomised, step-0, control — is what sparsify sees), our token rows (`corpus.token_sequences`)
and our hookpoint names to sparsify's own `Trainer` / `TrainConfig` / `SaeConfig`: its training loop runs
unchanged. Several seeds train in one run (`init_seeds`: every seed sees the same batches in the same
order). The run folder is sparsify's own layout, which `sae.load_saes(out)` reads back (`<hookpoint>/` or,
with several seeds, `<hookpoint>/seed<N>/`), plus `saesanity_run.json`, which names our hookpoint for each
sparsify module and records the recipe, the config, the world size and the versions (`load_run` uses it).

Launched by torchrun it trains data-parallel (sparsify's DDP):

    torchrun --nproc_per_node 2 -m saesanity.sae.sparsify_trainer --model EleutherAI/pythia-160m \\
        --corpus hf:monology/pile-uncopyrighted --n-tokens 8000000000 --hookpoints mlp_out.6 \\
        --seeds 0 1 --recipe paulo_belrose_2025 --device cuda --out runs/pythia160m-mlp6

**Hookpoints.** sparsify names a module by its path in `model.base_model` (it matches `cfg.hookpoints`
against `base_model.named_modules()`, trainer.py:51): `resid_post.L` is the decoder layer itself
(`layers.L` for GPT-NeoX and Llama, `h.L` for GPT-2), `mlp_out.L` its MLP (`layers.L.mlp`, `h.L.mlp`),
`attn_out.L` its attention block (`layers.L.attention`, `layers.L.self_attn`, `h.L.attn`) — the modules
`activations` hooks for the same names, so both trainers see the same activation. These are the folder
names of EleutherAI's hub SAEs (`EleutherAI/sae-pythia-160m-32k/layers.6.mlp`). Before 2025-04-03
(451e37f) sparsify matched the names of whatever model it was handed: its CLI loads `AutoModel` (so
`layers.6.mlp` too), while Heap et al. handed it the causal LM, hence `gpt_neox.layers.0` in their saved
config — the same modules. `resid_pre.L` is refused: sparsify hooks module outputs (resid_pre.L is
resid_post.(L−1)).

**torchrun / gloo.** sparsify initialises no process group itself (only its own `__main__` does, with
NCCL hard-coded); `main` here calls `saesanity.distributed.init` (gloo on the CPU, NCCL on CUDA) before
building the Trainer. One thing in the Trainer does not work on the CPU: it wraps each SAE as
`DDP(sae, device_ids=[dist.get_rank()])` (trainer.py:501), and DDP refuses `device_ids` for a CPU module
(and, on CUDA, the global rank is the wrong device index on every node but the first). While `fit` runs,
`sparsify.trainer.DDP` is swapped for `_ddp`, which passes the module's own device (`None` on the CPU) —
a runtime patch of one module attribute, restored afterwards; sparsify's files are not touched
(`tests/test_sparsify_trainer.py` trains 2 gloo ranks through torchrun). Only rank 0 writes SAEs and
checkpoints (sparsify's own `save`, with a barrier); rank 0 writes `saesanity_run.json`. sparsify's `fit`
sets torch's float32 matmul precision to "high" (TF32 on CUDA) for the whole process; it is put back after.

Data parallel batches: rank r of W reads, at step s, rows [s·B + r·B/W, s·B + (r+1)·B/W) of the token
rows (B = the recipe's `batch_size`, sequences summed over ranks), so the global batch of every step is
the one a single rank reads with batch size B. (sparsify's `__main__` instead gives each rank a
contiguous shard of the whole dataset, so its global batches depend on W.) What still depends on W, in
sparsify's loop: each rank's FVU is normalised by its *own* slice's variance and DDP averages the
gradients (a mean of per-rank FVUs, not the global FVU); b_dec starts at the mean of the ranks' means
(the global mean, as the slices are equal); and dead-latent clocks advance by each rank's *local* token
count (trainer.py:509), so a latent is called dead after `dead_feature_threshold` tokens per rank — W
times more tokens overall (it matters only with AuxK on, which neither paper used).

**Resuming** (`resume=True`, `--resume`) continues from sparsify's last checkpoint (every `save_every`
optimizer steps) and, with two corrections to what its `load_state` restores, gives bitwise the
uninterrupted result (tested, AuxK on, two seeds): sparsify saves a mid-run checkpoint with
`global_step` before its increment (trainer.py:578-579 vs 627), so its resume would train that batch
twice — the step is advanced by one here; and it looks the dead-latent clocks up by hookpoint
(trainer.py:213-217) while keying them by SAE name (`<hookpoint>/seed<N>`), so with several seeds it
restores none — they are restored here by SAE name. A finished run (`saesanity_run.json` present) is
returned as it is.

**Control variant.** `GaussianEmbedding` draws fresh noise per call from (seed, call index); every rank
would draw the same noise for its own slice, so, under W ranks, the call index of a rank's n-th forward
pass is set to n·W + r (with one rank it is n, as it would be anyway).

## The papers' recipes (`RECIPES`)

| setting | Paulo & Belrose 2025 (`paulo_belrose_2025`) | Heap et al. 2025 (`heap_2025`) | sparsify 1.3.3 defaults |
|---|---|---|---|
| library | EleutherAI `sae` (now sparsify), version not stated; `init_seeds` came 2024-12-18 (e0cc99e) [T, C] | ThomasHeap/sae, a fork of EleutherAI/sae at f60c38d (2024-08-15) [C] | — |
| optimizer | Adam [T] | Adam (8-bit when bitsandbytes is importable), fork trainer.py:85-100 [C] | signum + schedule-free (config.py:65) |
| learning rate | sparsify's automatic 2e-4/√(F/2¹⁴) = 1.41e-4 at F = 2¹⁵ (`lr` not in the paper; the auto rule is the default of every version) [C] | the same rule, `lr: null` in the saved config [C] | Adam: same rule (trainer.py:123); signum: 5e-3/√(F/2¹⁴) |
| schedule | linear warm-up 1000 steps, then linear decay towards 0 at `len(dataset)//batch_size` (`get_linear_schedule_with_warmup`) [C] | the same, but the decay's length counts forward batches and the scheduler steps once per 8: over their 100M tokens (12,207 batches, 1,525 optimizer steps) the warm-up takes 1,000 steps and the lr ends at 95 % of peak [C] | Adam: same (trainer.py:133-135) |
| AuxK | off: `auxk_alpha` 0, the default [C] | off: `auxk_alpha: 0.0` in the saved config [C] | 0 (config.py:79) |
| dead-latent threshold | 10M tokens (default; only logged with AuxK off) [C] | 10M tokens [C] | 10M (config.py:82) |
| k | 32 [T: Fig. 5 "k32"; C: hub cfg of EleutherAI/sae-pythia-160m-32k] | 32 [C] | 32 |
| latents | 2¹⁵ = 32,768 on Pythia-160M (d = 768); "a ratio of 36" for the cross-model runs [T] | expansion factor 64 × d_model [C] | expansion 32 |
| context length | 2049 [T] | 2048 (`chunk_and_tokenize` default) [C] | `__main__` ctx_len 2048 |
| batch | 32 sequences [T] (global; grad accumulation not stated → 1) | 4 sequences × 8 accumulation steps = 32 per optimizer step, 2 micro-batches [C] | 32 sequences per rank (config.py:48) |
| training tokens | 8B (Pile) [T] | 100M (RedPajama-1T sample) [C] | the dataset |
| decoder | unit-norm rows: renormalised before every forward, parallel gradient removed before each step [C] | the same [C] | the same (trainer.py:425, 553) |
| grad clipping | per-SAE norm 1.0 in every sparsify before 2025-02-21 (d48553d trainer.py:333) [C, inferred] | per-SAE norm 1.0 after every batch, fork trainer.py:292 [C] | none (removed in 5be701f) |
| b_dec init | mean of the first batch (sparsify ≥ 2024-11-22); the hub seed-1 SAE (2024-08) predates it: geometric median [C] | geometric median of the first batch, fork trainer.py:232 [C] | mean of the first batch (trainer.py:420) |
| first token | trained on (sparsify drops no position) [C] | trained on [C] | trained on; `exclude_tokens` drops token *ids* |
| model / SAE precision | bf16 model on CUDA (`__main__`), fp32 SAE [C] | bf16 model (experiment_config.py `torch_dtype`), fp32 SAE [C] | bf16 model; SAE forward under bf16 autocast on CUDA (sparse_coder.py:205-209) |
| hookpoints | layer 6 MLP output (`layers.6.mlp`), others for Fig. 4 [T] | every layer's output, the residual stream (`gpt_neox.layers.0`…`.5` for Pythia-70M) [C] | every layer |

[T] paper text (`/work/shared/papers/003_*.txt` §3, §5); [C] code: sparsify's history (EleutherAI/sparsify
d48553d is the Dec-2024 state), ThomasHeap/sae (`sae/config.py`, `sae/trainer.py`, `experiments/train.py`,
`experiments/experiment_config.py`), and Heap et al.'s saved run config (hub `wlog/random_sae_pythia_70m_deduped`,
`cfg.json`). Our extract of Heap et al. stops before their methods section, so none of their numbers is
from their text.

What sparsify 1.3.3 cannot do as the papers' versions did, and so is *not* reproduced: Heap et al.'s
geometric-median b_dec; gradient clipping after every batch of an accumulation window (ours clips once per
optimizer step, `clip_grad_norm`, which equals the old behaviour with `grad_acc_steps` = 1); the FVU of
each micro-batch normalised by its own variance (1.3.3 divides each of the m = `micro_acc_steps` chunks'
squared error by the whole batch's variance, trainer.py:451-460, and still by m, so its gradient is about
1/m of the old one: Adam does not notice, the 1.0 clip of Heap et al.'s m = 2 does); fp32 SAE arithmetic
on CUDA (1.3.3 autocasts to bf16). The 8-bit Adam of bitsandbytes is used whenever that
package is importable, in every version; `saesanity_run.json` records which Adam ran.

`clip_grad_norm` is the one addition to sparsify's loop: the Trainer's SAEs get, per instance, a
`remove_gradient_parallel_to_decoder_directions` that first clips that SAE's gradient norm (sparsify calls
it once per SAE right before `optimizer.step()`, trainer.py:551-553, when `normalize_decoder` is on).

## How our own trainer (`sae/train.py`) differs

| | ours (`sae.train`) | sparsify 1.3.3 (as run here) |
|---|---|---|
| optimizer, lr | Adam, `lr` 4e-4 default (train.py:50, 192) | Adam (8-bit if bitsandbytes), lr 2e-4/√(F/2¹⁴) (trainer.py:108-130) |
| schedule | linear warm-up over `warmup_steps` = 20, then constant (train.py:257-259) | warm-up 1000 steps, then linear decay to 0 at the last batch (trainer.py:133) |
| AuxK | on: α = 1/32, k_aux = D/2, loss = FVU of the residual e reconstructed by the dead latents, normalised by e's own variance (train.py:54, topk.py:138-163) | off in both recipes; when on: scale·‖ê − e‖² / Var(x) with scale = min(dead/k_aux, 1) (sparse_coder.py:237-258) |
| dead latent | not fired (positive activation) in ≥ `dead_tokens` = 500k *global* tokens (train.py:55, 219, 229; topk.py:165) | in the top-k (even at value 0) within > 10M tokens, counted per rank (trainer.py:430, 439, 509) |
| reconstruction loss | FVU centred on the batch mean, global under DDP (metrics.py:28, base.py:train_fvu) | FVU centred on the batch mean, per rank under DDP (trainer.py:452, sparse_coder.py:262-263) |
| batch | 4096 activation rows (tokens) per step, drawn by a `data_seed` permutation of all rows, each batch sorted (train.py:49, 95) | 32 whole sequences per step in the rows' order (2049 / 2048 tokens each: 65k tokens); no shuffling in the loop (trainer.py:295-301) |
| first token | dropped (`drop_first` = 1, activations.py:175; stream.py) | kept |
| b_dec init | mean of the first batch (train.py:190) | mean of the first batch (trainer.py:420); Heap et al.: geometric median |
| init | W_enc ~ U(±1/√D) from a seeded generator, W_dec = normalised W_encᵀ, b_enc = 0 (base.py:168-173) | nn.Linear's U(±1/√D) under torch.manual_seed(seed), W_dec = normalised copy, b_enc = 0 (trainer.py:95, sparse_coder.py:53-65): same law, different draws |
| decoder norm | parallel gradient removed, step, rows renormalised *after* every step (train.py:267-269) | parallel gradient removed before the step; rows renormalised *before* each forward (trainer.py:425, 553), so the saved decoder is one step off unit norm |
| grad clipping | none | none in 1.3.3; the recipes restore 1.0 (above) |
| top-k | top-k of the pre-activations, then ReLU (topk.py) | ReLU, then top-k (fused_encoder.py:29-33): the same latents and values |
| precision | fp32 SAE, model in `model_dtype` | fp32 SAE; bf16 autocast on CUDA |
| architectures | topk, batchtopk, relu, gated, jumprelu | topk only here (groupmax and transcoders refused) |
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..activations import HookpointError, _block, decoder_layers, parse_hookpoint
from ..models import GaussianEmbedding, LoadedModel

MANIFEST = "saesanity_run.json"
_KINDS = ("resid_post", "mlp_out", "attn_out")
_OTHER_ARCHS = ("batchtopk", "relu", "gated", "jumprelu", "groupmax")


class SparsifyError(ValueError):
    pass


@dataclass(frozen=True)
class SparsifyRecipe:
    """One paper's sparsify settings (module docstring, `RECIPES`); `batch_size` is global (summed over ranks)."""

    name: str
    source: str  # where each number comes from
    k: int = 32  # active latents per token
    num_latents: int = 0  # latents; 0: expansion_factor × d_in
    expansion_factor: int = 32  # used when num_latents is 0
    ctx_len: int = 2048  # tokens per row: the token rows must have this length
    batch_size: int = 32  # sequences per forward pass, summed over ranks (each rank: batch_size / world)
    grad_acc_steps: int = 1  # forward passes per optimizer step
    micro_acc_steps: int = 1  # chunks each batch's activations are split into (memory; scales the gradient by 1/m)
    optimizer: str = "adam"  # adam | signum | muon (sparsify's choices)
    lr: float | None = None  # None: sparsify's automatic rule (2e-4/√(F/2¹⁴) for Adam)
    lr_warmup_steps: int = 1000  # linear warm-up, in optimizer steps
    auxk_alpha: float = 0.0  # AuxK weight (0: off)
    dead_feature_threshold: int = 10_000_000  # tokens without firing before a latent counts as dead
    normalize_decoder: bool = True  # unit-norm decoder rows
    clip_grad_norm: float | None = None  # per-SAE gradient norm clip before each optimizer step (None: off)
    exclude_tokens: tuple[int, ...] = ()  # token ids whose positions are not trained on
    save_every: int = 1000  # checkpoint every this many optimizer steps

    def overridden(self, **changes: Any) -> "SparsifyRecipe":
        bad = sorted(set(changes) - set(RECIPE_FIELDS))
        if bad:
            raise SparsifyError(f"unknown recipe field(s) {bad}; valid: {list(RECIPE_FIELDS)}")
        return dataclasses.replace(self, **changes)


PAULO_BELROSE_2025 = SparsifyRecipe(
    name="paulo_belrose_2025",
    source="Paulo & Belrose 2025 §3 (Adam, ctx 2049, 32 sequences, 2^15 latents on Pythia-160M MLP 6, 8B tokens); "
           "k=32 from Fig. 5 and the hub cfg of EleutherAI/sae-pythia-160m-32k; lr, warm-up, AuxK off, dead "
           "threshold and clipping from the sparsify code of that time (EleutherAI/sparsify d48553d)",
    k=32, num_latents=32768, expansion_factor=36, ctx_len=2049, batch_size=32, grad_acc_steps=1, micro_acc_steps=1,
    optimizer="adam", lr=None, lr_warmup_steps=1000, auxk_alpha=0.0, dead_feature_threshold=10_000_000,
    normalize_decoder=True, clip_grad_norm=1.0)

HEAP_2025 = SparsifyRecipe(
    name="heap_2025",
    source="Heap et al. 2025: ThomasHeap/sae (sae/config.py, sae/trainer.py, experiments/experiment_config.py, "
           "experiments/train.py) and their saved run config (hub wlog/random_sae_pythia_70m_deduped cfg.json): "
           "expansion 64, k 32, batch 4 x 8 accumulation steps, 2 micro-batches, auto lr, 1000 warm-up steps, AuxK "
           "off, 10M dead threshold, ctx 2048, clip 1.0, every layer's output, 100M tokens",
    k=32, num_latents=0, expansion_factor=64, ctx_len=2048, batch_size=4, grad_acc_steps=8, micro_acc_steps=2,
    optimizer="adam", lr=None, lr_warmup_steps=1000, auxk_alpha=0.0, dead_feature_threshold=10_000_000,
    normalize_decoder=True, clip_grad_norm=1.0)

SPARSIFY_1_3_3 = SparsifyRecipe(
    name="sparsify_1.3.3",
    source="eai-sparsify 1.3.3 TrainConfig / SparseCoderConfig defaults (config.py) and __main__ ctx_len",
    k=32, num_latents=0, expansion_factor=32, ctx_len=2048, batch_size=32, grad_acc_steps=1, micro_acc_steps=1,
    optimizer="signum", lr=None, lr_warmup_steps=1000, auxk_alpha=0.0, dead_feature_threshold=10_000_000,
    normalize_decoder=True, clip_grad_norm=None)

RECIPES = {r.name: r for r in (PAULO_BELROSE_2025, HEAP_2025, SPARSIFY_1_3_3)}
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(SparsifyRecipe) if f.name not in ("name", "source"))


def get_recipe(name_or_recipe: str | SparsifyRecipe) -> SparsifyRecipe:
    if isinstance(name_or_recipe, SparsifyRecipe):
        return name_or_recipe
    if name_or_recipe not in RECIPES:
        raise SparsifyError(f"unknown sparsify recipe {name_or_recipe!r}; valid: {list(RECIPES)}")
    return RECIPES[name_or_recipe]


# ---------------------------------------------------------------- hookpoints

def sparsify_hookpoint(lm: LoadedModel, hookpoint: str) -> str:
    """Our hookpoint name (`mlp_out.6`) -> sparsify's module path in `lm.model.base_model` (`layers.6.mlp`)."""
    hp = parse_hookpoint(hookpoint, lm.n_layers, lm.name)
    if hp.kind not in _KINDS:
        kinds = ", ".join(k + ".L" for k in _KINDS)
        raise HookpointError(f"hookpoint {hookpoint!r}: sparsify trains on module outputs only ({kinds}); "
                             f"resid_pre.L is resid_post.(L-1)")
    base = lm.model.base_model
    layer = decoder_layers(base)[hp.layer]
    target = layer if hp.kind == "resid_post" else _block(layer, hp.kind)
    for name, mod in base.named_modules():
        if mod is target:
            return name
    raise HookpointError(f"hookpoint {hookpoint!r}: its module is not inside {type(base).__name__}")  # pragma: no cover


# ---------------------------------------------------------------- data

class TokenRows(torch.utils.data.Dataset):
    """Rows of a [n, T] token array as sparsify's dataset items ({"input_ids": LongTensor [T]}), in `index` order."""

    def __init__(self, tokens: np.ndarray, index: np.ndarray):
        self.tokens, self.index = tokens, np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(np.asarray(self.tokens[int(self.index[i])], dtype=np.int64))}

    def select(self, indices) -> "TokenRows":  # what sparsify's resume calls
        return TokenRows(self.tokens, self.index[np.asarray(list(indices), dtype=np.int64)])


def rank_rows(n_rows: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """Row indices rank `rank` of `world` reads, in order: at step s, rows s·B + [r·B/W, (r+1)·B/W) (B global)."""
    if batch_size % world:
        raise SparsifyError(f"batch_size={batch_size} sequences is not divisible by the world size {world}")
    n_steps = n_rows // batch_size
    if n_steps < 1:
        raise SparsifyError(f"{n_rows} token rows are less than one batch of {batch_size} sequences")
    per = batch_size // world
    return (np.arange(n_steps)[:, None] * batch_size + rank * per + np.arange(per)[None, :]).reshape(-1)


# ---------------------------------------------------------------- config

def build_config(lm: LoadedModel, hookpoints: list[str], seeds: list[int], out: str | Path, *,
                 recipe: str | SparsifyRecipe = PAULO_BELROSE_2025, architecture: str = "topk", world: int = 1,
                 **overrides: Any):
    """sparsify's `TrainConfig` for a run of `recipe` (with `overrides` of its fields) on `lm` at `hookpoints`.

    `batch_size` in the result is per rank (the recipe's global batch / `world`), as sparsify counts it.
    Raises `SparsifyError` / `HookpointError` (one line) for an architecture sparsify does not train, k ≥ the
    number of latents, an unknown hookpoint, or no seeds.
    """
    from sparsify import SaeConfig, TrainConfig

    if architecture != "topk":
        where = "saesanity.sae.train (trainer: ours)" if architecture in _OTHER_ARCHS else "nothing here"
        raise SparsifyError(f"architecture {architecture!r}: the sparsify trainer trains TopK SAEs only; "
                            f"{architecture} SAEs are trained by {where}")
    r = get_recipe(recipe).overridden(**overrides)
    if not hookpoints:
        raise SparsifyError("no hookpoints given")
    if len(set(hookpoints)) != len(hookpoints):
        raise SparsifyError(f"hookpoints {hookpoints} repeat a name")
    names = [sparsify_hookpoint(lm, h) for h in hookpoints]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SparsifyError(f"seeds={list(seeds)}: need at least one seed, without repeats")
    latents = r.num_latents or r.expansion_factor * lm.d_model
    if not 0 < r.k < latents:
        raise SparsifyError(f"k={r.k} must satisfy 0 < k < num_latents={latents}")
    if r.clip_grad_norm is not None and not r.normalize_decoder:
        raise SparsifyError("clip_grad_norm needs normalize_decoder=True (the clip runs in the decoder-gradient step)")
    if r.batch_size % world:
        raise SparsifyError(f"batch_size={r.batch_size} sequences is not divisible by the world size {world}")
    out = Path(out)
    sae = SaeConfig(activation="topk", k=r.k, num_latents=r.num_latents, expansion_factor=r.expansion_factor,
                    normalize_decoder=r.normalize_decoder, multi_topk=False, skip_connection=False, transcode=False)
    return TrainConfig(sae, batch_size=r.batch_size // world, grad_acc_steps=r.grad_acc_steps,
                       micro_acc_steps=r.micro_acc_steps, loss_fn="fvu", optimizer=r.optimizer, lr=r.lr,
                       lr_warmup_steps=r.lr_warmup_steps, k_decay_steps=0, auxk_alpha=r.auxk_alpha,
                       dead_feature_threshold=r.dead_feature_threshold, exclude_tokens=list(r.exclude_tokens),
                       hookpoints=names, init_seeds=[int(s) for s in seeds], layers=[], layer_stride=1,
                       distribute_modules=False, save_every=r.save_every, save_best=False, finetune=None,
                       log_to_wandb=False, run_name=out.name, wandb_log_frequency=1, save_dir=str(out.parent))


# ---------------------------------------------------------------- runtime adaptations (module docstring)

def _ddp(module, device_ids=None, **kwargs):
    """DDP for sparsify's SAEs: the module's own device (None on the CPU), not the global rank."""
    from torch.nn.parallel import DistributedDataParallel

    dev = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None, **kwargs)


@contextlib.contextmanager
def _patched_ddp():
    import sparsify.trainer as st

    prev, st.DDP = st.DDP, _ddp
    try:
        yield
    finally:
        st.DDP = prev


def _add_clipping(saes: dict, max_norm: float) -> None:
    """Clip each SAE's gradient norm at `max_norm` right before sparsify's optimizer step (per instance)."""
    for sae in saes.values():
        inner = sae.remove_gradient_parallel_to_decoder_directions

        def clipped(inner=inner, sae=sae):
            torch.nn.utils.clip_grad_norm_(sae.parameters(), max_norm)
            inner()

        sae.remove_gradient_parallel_to_decoder_directions = clipped


def _restore_dead_clocks(trainer, out: Path) -> None:
    """Tokens since each latent fired, per SAE: sparsify's `load_state` looks them up by hookpoint (trainer.py:213-217),
    but keys them by SAE name (`<hookpoint>/seed<N>` with several seeds), so with several seeds none is restored."""
    state = torch.load(out / "rank_0_state.pt", map_location=trainer.model.device, weights_only=True)
    for name, counts in state["num_tokens_since_fired"].items():
        if name in trainer.num_tokens_since_fired:
            trainer.num_tokens_since_fired[name] = counts


LOG = "training_log.json"  # per SAE folder: our trainer's log format (`_TrainLog`)


class _TrainLog:
    """Training records of every SAE of a sparsify run, in our trainer's log format (step, tokens, fvu, l0,
    dead_frac), which sparsify keeps only for wandb: a forward hook on each SAE sums the FVU of the step's
    micro-batches (each normalised by the whole batch's variance, so their sum is the batch's FVU) and averages
    it over the accumulation steps; a record is appended every `log_every` optimizer steps and at the last
    one. FVU is rank 0's slice of the batch (sparsify all-reduces it only for wandb); `dead_frac` is the share
    of latents sparsify counts as dead (not in the top-k for more than `dead_feature_threshold` tokens) before
    that step's update. Saved with sparsify's checkpoints and read back on resume."""

    def __init__(self, trainer, out: Path, tokens_per_step: int, log_every: int = 10):
        self.trainer, self.out, self.tokens_per_step, self.log_every = trainer, out, tokens_per_step, log_every
        self.records: dict[str, list[dict]] = {name: [] for name in trainer.saes}
        self.sums: dict[str, float] = dict.fromkeys(trainer.saes, 0.0)
        self.handles = [sae.register_forward_hook(self._hook(name)) for name, sae in trainer.saes.items()]

    def _hook(self, name: str):
        def hook(module, args, output):
            self.sums[name] += float(output.fvu.detach())
        return hook

    def step(self, step: int, n_steps: int) -> None:
        """After optimizer step `step` (0-based) of `n_steps`."""
        acc = self.trainer.cfg.grad_acc_steps
        if step % self.log_every == 0 or step == n_steps - 1:
            for name, sae in self.trainer.saes.items():
                dead = self.trainer.num_tokens_since_fired[name] > self.trainer.cfg.dead_feature_threshold
                self.records[name].append({"step": step, "tokens": (step + 1) * self.tokens_per_step,
                                           "fvu": self.sums[name] / acc, "l0": float(sae.cfg.k),
                                           "dead_frac": float(dead.float().mean())})
        self.sums = dict.fromkeys(self.sums, 0.0)

    def save(self) -> None:
        for name, recs in self.records.items():
            (self.out / name).mkdir(parents=True, exist_ok=True)
            (self.out / name / LOG).write_text(json.dumps(recs))

    def load(self) -> None:
        for name in self.records:
            f = self.out / name / LOG
            if f.exists():
                self.records[name] = json.loads(f.read_text())

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def _logging(trainer, out: Path, rank: int, tokens_per_step: int, n_steps: int, resumed: bool):
    """`_TrainLog` attached to `trainer` while it fits: a record after each optimizer step (a post-step hook on
    sparsify's first optimizer), saved with each of sparsify's checkpoints (rank 0) and at the end."""
    log = _TrainLog(trainer, out, tokens_per_step)
    if resumed:
        log.load()
    save = trainer.save

    def stepped(optimizer, args, kwargs):
        # sparsify advances global_step after the step: this is optimizer step (global_step + 1) / acc, 1-based
        log.step((trainer.global_step + 1) // trainer.cfg.grad_acc_steps - 1, n_steps)

    def saved():
        save()
        if rank == 0:
            log.save()

    hook = trainer.optimizers[0].register_step_post_hook(stepped)
    trainer.save = saved
    try:
        yield log
    finally:
        trainer.save = save
        hook.remove()
        log.close()


@contextlib.contextmanager
def _rank_noise(lm: LoadedModel, rank: int, world: int):
    """Control variant under W ranks: the n-th forward of rank r draws noise index n·W + r (module docstring)."""
    emb = lm.model.get_input_embeddings()
    if not isinstance(emb, GaussianEmbedding) or world == 1:
        yield
        return
    calls = [0]

    def pre(mod, args):
        mod.call_index = calls[0] * world + rank
        calls[0] += 1

    handle = emb.register_forward_pre_hook(pre)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------- training

def train_sparsify(lm: LoadedModel, tokens: np.ndarray, hookpoints: list[str], seeds: list[int], out: str | Path, *,
                   recipe: str | SparsifyRecipe = PAULO_BELROSE_2025, architecture: str = "topk",
                   resume: bool = False, meta: dict | None = None, **overrides: Any) -> dict[str, dict[int, Path]]:
    """Train sparsify TopK SAEs (each seed × hookpoint) on `tokens` [n_rows, ctx_len]: {hookpoint: {seed: dir}}.

    Every whole global batch of rows is trained on once, in row order. Under torch.distributed (torchrun)
    each rank must call this with the same arguments; rank r reads its slice of each batch (`rank_rows`).
    `out` is the run folder (sparsify's `save_dir/run_name`); an existing run there is resumed with
    `resume=True` and refused otherwise. `meta` is stored in `saesanity_run.json` (e.g. corpus and variant).
    """
    import torch.distributed as dist
    from sparsify import Trainer, __version__ as sparsify_version

    rank, world = distributed.world()
    r = get_recipe(recipe).overridden(**overrides)
    cfg = build_config(lm, hookpoints, seeds, out, recipe=r, architecture=architecture, world=world)
    tokens = np.asarray(tokens) if not isinstance(tokens, np.ndarray) else tokens
    if tokens.ndim != 2 or tokens.shape[1] != r.ctx_len:
        raise SparsifyError(f"token rows have shape {tuple(tokens.shape)}; recipe {r.name} has ctx_len={r.ctx_len} "
                            f"(pass ctx_len={tokens.shape[-1]} to override)")
    out = Path(out)
    started = (out / "state.pt").exists()
    if started and not resume:
        raise SparsifyError(f"{out} already holds a sparsify run; pass resume=True to continue it, or remove it")
    dataset = TokenRows(tokens, rank_rows(tokens.shape[0], r.batch_size, rank, world))
    trainer = Trainer(cfg, dataset, lm.model.base_model)
    if r.clip_grad_norm is not None:
        _add_clipping(trainer.saes, r.clip_grad_norm)
    if started:
        if (out / MANIFEST).exists():  # finished: nothing left to train
            return _folders(out)
        trainer.load_state(str(out))
        _restore_dead_clocks(trainer, out)
        # sparsify saves mid-run checkpoints with global_step *before* its increment (trainer.py:578-579 vs 627),
        # so the batch at global_step was already trained; its own resume would train it twice
        trainer.global_step += 1
    precision = torch.get_float32_matmul_precision()
    n_steps = len(dataset) // cfg.batch_size // r.grad_acc_steps
    try:
        with _patched_ddp(), _rank_noise(lm, rank, world), \
                _logging(trainer, out, rank, r.batch_size * r.grad_acc_steps * r.ctx_len, n_steps, started):
            trainer.fit()
    finally:  # fit() sets "high" (TF32 on CUDA) for the whole process; keep it to the training
        torch.set_float32_matmul_precision(precision)
    by_name = {sparsify_hookpoint(lm, h): h for h in hookpoints}
    folders: dict[str, dict[int, Path]] = {h: {} for h in hookpoints}
    for name in trainer.saes:
        module, _, seed = name.partition("/seed")
        folders[by_name[module]][int(seed) if seed else int(seeds[0])] = out / name
    if rank == 0:
        adam = type(trainer.optimizers[0]).__module__ + "." + type(trainer.optimizers[0]).__name__
        manifest = {"trainer": "sparsify", "sparsify_version": sparsify_version, "torch_version": torch.__version__,
                    "recipe": dataclasses.asdict(r), "architecture": architecture, "world_size": world,
                    "model": lm.spec, "variant": lm.variant, "variant_seed": lm.seed,
                    "hookpoints": {h: sparsify_hookpoint(lm, h) for h in hookpoints},
                    "seeds": [int(s) for s in seeds], "optimizer_class": adam,
                    "saes": {h: {str(s): p.relative_to(out).as_posix() for s, p in d.items()}
                             for h, d in folders.items()},
                    "n_rows": int(tokens.shape[0]), "rows_trained": int(len(dataset) * world),
                    "tokens_trained": int(len(dataset) * world * r.ctx_len), "steps": int(trainer.global_step),
                    "train_config": cfg.to_dict(), "meta": meta or {}}
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    if world > 1:
        dist.barrier()
    return folders


def _folders(out: Path) -> dict[str, dict[int, Path]]:
    man = json.loads((out / MANIFEST).read_text())
    return {h: {int(s): out / rel for s, rel in d.items()} for h, d in man["saes"].items()}


def load_run(out: str | Path) -> dict[tuple[str, int], Any]:
    """{(our hookpoint, seed): SAE} of a run folder written by `train_sparsify` (each SAE's `hookpoint` set)."""
    from .io import load_sae

    out = Path(out)
    man = json.loads((out / MANIFEST).read_text())
    result = {}
    for hook, by_seed in man["saes"].items():
        for seed, rel in by_seed.items():
            sae = load_sae(out / rel)
            sae.hookpoint = hook
            result[(hook, int(seed))] = sae
    return result


# ---------------------------------------------------------------- command line (torchrun entry point)

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m saesanity.sae.sparsify_trainer",
                                description="Train TopK SAEs with EleutherAI sparsify on a saesanity model, corpus and "
                                            "hookpoints; run it under `torchrun --nproc_per_node N -m ...` for data "
                                            "parallelism (gloo on the CPU, NCCL on CUDA).")
    p.add_argument("--model", required=True, help="model spec (saesanity.models), e.g. EleutherAI/pythia-160m")
    p.add_argument("--variant", default="trained", help="trained | rerandomized_incl_emb | rerandomized_excl_emb | "
                                                        "init | step0 | control")
    p.add_argument("--variant-seed", type=int, default=0)
    p.add_argument("--model-dtype", default="float32", help="float32 | bfloat16 | float16")
    p.add_argument("--corpus", required=True, help="corpus spec (saesanity.corpus): debian, hf:<dataset>, ...")
    p.add_argument("--split", default="train")
    p.add_argument("--data-seed", type=int, default=0,
                   help="shuffle seed of Debian corpora (hf: corpora keep stream order)")
    p.add_argument("--n-tokens", type=int, required=True,
                   help="training tokens (rows of ctx_len tokens; whole global batches are trained on)")
    p.add_argument("--hookpoints", nargs="+", required=True, help="our names: mlp_out.6 resid_post.6 attn_out.6")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="SAE initialisation seeds (all see the same batches)")
    p.add_argument("--architecture", default="topk", help="topk only (others: trainer ours)")
    p.add_argument("--recipe", default=PAULO_BELROSE_2025.name, help=f"one of {list(RECIPES)}")
    p.add_argument("--device", default="cpu", help="cpu | cuda (under torchrun each rank takes cuda:LOCAL_RANK)")
    p.add_argument("--resume", action="store_true", help="continue the run already in --out")
    p.add_argument("--out", required=True, help="run folder (sparsify layout, read by saesanity.sae.load_saes)")
    for f in dataclasses.fields(SparsifyRecipe):
        if f.name in ("name", "source"):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "exclude_tokens":
            p.add_argument(flag, nargs="*", type=int, default=None, help="recipe override: token ids not trained on")
        elif f.name == "normalize_decoder":
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None, help="recipe override")
        else:
            typ = {"lr": float, "clip_grad_norm": float}.get(f.name, type(getattr(SPARSIFY_1_3_3, f.name)))
            p.add_argument(flag, type=typ, default=None, help="recipe override")
    return p


def main(argv: list[str] | None = None) -> int:
    from ..corpus import token_sequences
    from ..models import load_model

    args = _parser().parse_args(argv)
    overrides = {f: getattr(args, f) for f in RECIPE_FIELDS if getattr(args, f, None) is not None}
    if "exclude_tokens" in overrides:
        overrides["exclude_tokens"] = tuple(overrides["exclude_tokens"])
    r = get_recipe(args.recipe).overridden(**overrides)
    rank, world, device = distributed.init(args.device)
    try:
        import torch.distributed as dist

        lm = load_model(args.model, args.variant, args.variant_seed, device, args.model_dtype)
        n_rows = args.n_tokens // r.ctx_len

        def rows():
            return token_sequences(args.corpus, lm.tokenizer, lm.tokenizer_id, r.ctx_len, split=args.split,
                                   seed=args.data_seed, max_tokens=n_rows * r.ctx_len, progress=rank == 0)

        if rank == 0:  # rank 0 fills the token cache; the others read it
            tokens = rows()
        if world > 1:
            dist.barrier()
        if rank != 0:
            tokens = rows()
        if tokens.shape[0] < n_rows:
            raise SparsifyError(f"corpus {args.corpus!r} has {tokens.shape[0]:,} rows of {r.ctx_len} tokens; "
                                f"n_tokens={args.n_tokens:,} needs {n_rows:,}")
        meta = {"corpus": args.corpus, "split": args.split, "data_seed": args.data_seed, "n_tokens": args.n_tokens,
                "model_dtype": args.model_dtype}
        with contextlib.redirect_stdout(None) if rank != 0 else contextlib.nullcontext():  # as sparsify's __main__
            folders = train_sparsify(lm, tokens[:n_rows], args.hookpoints, args.seeds, args.out, recipe=r,
                                     architecture=args.architecture, resume=args.resume, meta=meta)
        if rank == 0:
            for h, d in folders.items():
                for s, path in d.items():
                    print(f"{h} seed {s}: {path}")
    except (SparsifyError, HookpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        distributed.close()
    return 0


if __name__ == "__main__":
    distributed.exit(main())
