"""One training loop for every SAE architecture, fed by a batch source, for a family of SAEs at once.

A *source* hands out the training batch of each step (`MemmapSource`: rows of a cached activation
array in a `data_seed` order; `saesanity.stream.ModelSource`: the model's forward pass itself, with
no activation cache). A *family* is a list of configs that read the same source: seeds, sizes, k,
architectures. Every member steps on the same batch, so N SAEs cost one read (or one forward) of
the data, and each member's result is bitwise the one a separate run gives (`tests/test_train_family.py`).
`train_families` steps several families in one loop, each on its own source — the per-hookpoint views of
one multi-hookpoint `ModelSource`, so the SAEs of several hookpoints share one model forward per chunk —
each member again bitwise its family's separate run (`tests/test_stream.py`).

The seed sets only the initialisation: the batch order is a permutation drawn from `data_seed`,
so SAEs of different seeds see exactly the same batches in the same order. `b_dec` starts at the
mean of the first batch (data-dependent, the same for every seed).

Each architecture's loss is in its `training_step` (`topk.py`, `arch.py`); all use the FVU centred on
the batch mean (`metrics.fvu`) as the reconstruction term. TopK and BatchTopK add
auxk_alpha · FVU(e, ê): e = x − x̂ reconstructed from the `k_aux` = D/2 most active *dead* latents
(AuxK, Gao et al. 2024); a latent is dead when it has not fired in the last `dead_tokens` training
tokens. After every step the decoder rows are renormalised to unit norm and, before it, the
gradient component parallel to each row is removed.

**bf16 autocast** (`TrainConfig.autocast = "bf16"`): each member's forward (its `training_step`) runs
under `torch.autocast(device type, torch.bfloat16)`, so its matmuls (the dense encoder B·D·F, ReLU/Gated/
JumpReLU/BatchTopK's dense decoder, AuxK's dead-latent products) take bf16 inputs with fp32
accumulation; the backward runs outside the autocast block, in the dtypes the forward recorded.
Parameters, gradients and Adam state stay fp32. What stays fp32 explicitly: the TopK sparse paths
(`topk.py`: the gather of the selected pre-activations and the `embedding_bag` decoder take fp32 values
and weights, their backwards run with autocast off), and every loss term (`base.train_fvu`,
`batch_mean`, `batch_scale` upcast a bf16 input before reducing). It changes the results (bf16
rounds the matmul inputs to 8 significant bits), so it is in the cache key — only when on, so keys
of fp32 runs are the ones they were before the option existed. Works on the CPU too (AVX-512 BF16 /
AMX kernels where the CPU has them).

Data parallel (`torchrun`, `torch.distributed` + DDP): each rank takes its slice of every global
batch; batch means and variances in the losses are global (`sae.base.sharded`), so the loss — and
the trained SAE, up to float reassociation — does not depend on the world size; latents' firing is
all-reduced, so every rank counts the same dead latents; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from .. import distributed
from .arch import ARCHITECTURES
from .base import SAEBase, StepOut, sharded
from .topk import TopKSAE


@dataclass(frozen=True)
class TrainConfig:
    d_sae: int  # number of latents
    k: int  # active latents per token
    batch_size: int = 4096  # tokens per step
    lr: float = 4e-4  # Adam learning rate (after warm-up)
    n_tokens: int = 1_000_000  # tokens trained on (steps = n_tokens // batch_size)
    seed: int = 0  # initialisation seed only
    data_seed: int = 0  # batch order seed, shared by every SAE seed
    auxk_alpha: float = 1 / 32  # AuxK weight (0 disables AuxK)
    dead_tokens: int = 500_000  # a latent not fired in this many tokens counts as dead
    warmup_steps: int = 20  # linear learning-rate warm-up
    log_every: int = 10  # steps between logged FVU / L0 / dead fraction
    architecture: str = "topk"  # topk | batchtopk | relu | gated | jumprelu | matryoshka
    l1_coefficient: float = 1.0  # λ₁ of ReLU and Gated SAEs (scale-free, see sae.base)
    l0_coefficient: float = 1e-3  # λ₀ of JumpReLU SAEs
    jumprelu_init_threshold: float = 1e-3  # in units of s/√D of the first batch
    jumprelu_bandwidth: float = 1e-3  # ε of the straight-through estimator, same units
    autocast: str = "none"  # none: fp32 forward | bf16: forward under torch.autocast(bfloat16) (module docstring)
    # constant: lr after the warm-up | linear: after it, linear decay to 0 at the run's end (sparsify's
    # get_linear_schedule_with_warmup, the papers' engine); `lr_at`
    lr_schedule: str = "constant"
    # random baselines (Korznikov et al. 2026): none | decoder (W_dec kept at its random initialisation) |
    # soft_decoder (W_dec trained, each row projected back to cos >= freeze_min_cos with its initialisation
    # after every step) | encoder (W_enc kept at its initialisation; b_enc, b_dec and W_dec train); `_constrain`
    freeze: str = "none"
    freeze_min_cos: float = 0.8
    matryoshka_widths: tuple = ()  # the inner widths m_1 < … < d_sae of architecture "matryoshka"

    def __post_init__(self):
        if self.autocast not in AUTOCAST:
            raise ValueError(f"autocast={self.autocast!r}; valid: {list(AUTOCAST)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; valid: {list(LR_SCHEDULES)}")
        if self.freeze not in FREEZE:
            raise ValueError(f"freeze={self.freeze!r}; valid: {list(FREEZE)}")
        if not 0 < self.freeze_min_cos < 1:
            raise ValueError(f"freeze_min_cos={self.freeze_min_cos}: must lie in (0, 1)")

    def key(self) -> dict:
        """The fields that define this SAE: the ones its architecture uses (the cache key); `autocast`
        only when it is on (so an fp32 run's key is the one it had before the option existed)."""
        unused = {"topk": ARCH_ONLY_FIELDS, "batchtopk": ARCH_ONLY_FIELDS,
                  "matryoshka": ARCH_ONLY_FIELDS - {"matryoshka_widths"},
                  "relu": ARCH_ONLY_FIELDS - {"l1_coefficient"} | {"k", "auxk_alpha", "dead_tokens"},
                  "gated": ARCH_ONLY_FIELDS - {"l1_coefficient"} | {"k", "auxk_alpha", "dead_tokens"},
                  "jumprelu": ARCH_ONLY_FIELDS - {"l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"}
                  | {"k", "auxk_alpha", "dead_tokens"}}[self.architecture]
        if self.autocast == "none":
            unused = unused | {"autocast"}
        if self.lr_schedule == "constant":  # keys of constant-rate runs are the ones from before the option
            unused = unused | {"lr_schedule"}
        if self.freeze == "none":  # likewise for SAEs that train every weight
            unused = unused | {"freeze", "freeze_min_cos"}
        elif self.freeze != "soft_decoder":
            unused = unused | {"freeze_min_cos"}
        key = {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}
        if self.architecture == "topk" and self.autocast != "none":
            # bf16 pre-activations tie often, and the TopK rule for ties changed (sae/select.py: a per-row cyclic
            # order, no latent favoured; torch.topk's order before): such SAEs get a key of their own. In fp32 the
            # two rules agree but on exact ties, so fp32 keys stay the ones from before.
            key["selection"] = SELECTION_RULE
        if self.architecture in ("batchtopk", "matryoshka"):  # the sparse step with exact values (arch.py), not the
            key["step"] = "sparse"  # dense one of before (whose SAEs keep their keys, without "step")
        return key


SELECTION_RULE = "cyclic_ties"  # sae/select.topk_indices; in the key of bf16 TopK SAEs (TrainConfig.key)
ARCH_ONLY_FIELDS = {"l1_coefficient", "l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth",
                    "matryoshka_widths"}
AUTOCAST = {"none": None, "bf16": torch.bfloat16}  # TrainConfig.autocast -> the autocast dtype
LR_SCHEDULES = ("constant", "linear")
FREEZE = ("none", "decoder", "soft_decoder", "encoder")  # TrainConfig.freeze


def autocast(cfg: TrainConfig, device: str):
    """The context `cfg`'s forward runs in on `device`: torch.autocast to bf16, or nothing (fp32)."""
    if cfg.autocast == "none":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AUTOCAST[cfg.autocast])


def make_sae(cfg: TrainConfig, d_in: int) -> SAEBase:
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {cfg.architecture!r}; valid: {list(ARCHITECTURES)}")
    cls = ARCHITECTURES[cfg.architecture]
    if issubclass(cls, TopKSAE):
        if not 0 < cfg.k < cfg.d_sae:
            raise ValueError(f"k={cfg.k} must satisfy 0 < k < d_sae={cfg.d_sae}")
        if cfg.architecture == "matryoshka":
            return cls(d_in, cfg.d_sae, cfg.k, widths=cfg.matryoshka_widths, seed=cfg.seed)
        return cls(d_in, cfg.d_sae, cfg.k, seed=cfg.seed)
    return cls(d_in, cfg.d_sae, seed=cfg.seed)


def epochs_of(n_rows: int, cfg: TrainConfig) -> int:
    """Passes over the `n_rows` activation rows that `cfg`'s n_tokens make (the last one possibly partial)."""
    return -(-(cfg.n_tokens // cfg.batch_size * cfg.batch_size) // n_rows)


def batch_order(n_rows: int, cfg: TrainConfig) -> np.ndarray:
    """[n_steps, batch_size] row indices: a `data_seed` permutation, each batch sorted for locality. When n_tokens
    exceeds the rows, the passes follow one another, each its own permutation (epoch 0 from `data_seed`, epoch e
    from [data_seed, e]), so a run of one epoch has the order it always had and a shorter run's order is a
    prefix of a longer one's. A row seen again is the same activation vector (the forward pass is
    deterministic): a repeated sample, not a new token."""
    n_steps = cfg.n_tokens // cfg.batch_size
    if n_steps < 1:
        raise ValueError(f"n_tokens={cfg.n_tokens} is less than one batch of {cfg.batch_size}")
    if n_rows < cfg.batch_size:
        raise ValueError(f"{n_rows:,} activation rows are fewer than one batch of {cfg.batch_size:,}")
    perms = [np.random.default_rng(cfg.data_seed if e == 0 else [cfg.data_seed, e]).permutation(n_rows)
             for e in range(epochs_of(n_rows, cfg))]
    perm = np.concatenate(perms)[: n_steps * cfg.batch_size]
    return np.sort(perm.reshape(n_steps, cfg.batch_size), axis=1)


class MemmapSource:
    """Batches from an activation array `acts` [N, D] (a memmap is fine) in the order `order` [steps, B].

    `batch(step, rank, world)` is rank's contiguous slice of the global batch `order[step]`.
    """

    def __init__(self, acts: np.ndarray, order: np.ndarray):
        self.acts, self.order = acts, order
        self.n_steps, self.batch_size = order.shape
        self.d_in = int(acts.shape[1])

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        rows = self.order[step]
        if world > 1:
            per = len(rows) // world
            rows = rows[rank * per:(rank + 1) * per]
        x = torch.from_numpy(np.asarray(self.acts[rows], dtype=np.float32))
        # one pass: a finite sum of the batch means every value is finite; only then look closer (an overflowing sum)
        if not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
            bad = int(rows[int(torch.nonzero(~torch.isfinite(x).all(1))[0])])
            raise ValueError(f"activations contain NaN/inf (row {bad:,}, batch {step}); refusing to train on them")
        return x

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The batch initialisation is drawn from: the whole first batch, on every rank."""
        return self.batch(0)


class _Family(nn.Module):
    """The members as one module, so one DDP wrapper all-reduces every member's gradients together."""

    def __init__(self, saes: list[SAEBase]):
        super().__init__()
        self.members = nn.ModuleList(saes)

    def forward(self, xs: list[torch.Tensor], deads: list[torch.Tensor], cfgs: list[TrainConfig]) -> list[StepOut]:
        """Member i's training step on its batch xs[i] (members of one source share the tensor)."""
        outs = []
        for m, x, d, c in zip(self.members, xs, deads, cfgs):
            with autocast(c, x.device):
                outs.append(m.training_step(x, d, c))
        return outs


def _check_family(source, cfgs: list[TrainConfig], world: int) -> None:
    if not cfgs:
        raise ValueError("train_family needs at least one TrainConfig")
    bad = [c.batch_size for c in cfgs if c.batch_size != source.batch_size]
    if bad:
        raise ValueError(f"batch sizes {bad} differ from the source's {source.batch_size}: a family steps on one batch")
    for c in cfgs:
        if c.n_tokens // c.batch_size > source.n_steps:
            raise ValueError(f"n_tokens={c.n_tokens:,} needs {c.n_tokens // c.batch_size:,} steps; the source has "
                             f"{source.n_steps:,} of {source.batch_size:,}")
    if world > 1:
        if source.batch_size % world:
            raise ValueError(f"batch_size={source.batch_size} is not divisible by the world size {world}")
        if len({c.n_tokens for c in cfgs}) > 1:
            raise ValueError("under torch.distributed every member of a family trains for the same n_tokens")


def _check_families(families, world: int) -> None:
    if not families:
        raise ValueError("train_families needs at least one (source, configs) family")
    for source, cfgs in families:
        _check_family(source, cfgs, world)
    steps = sorted({c.n_tokens // c.batch_size for _, cfgs in families for c in cfgs})
    if world > 1 and len(steps) > 1:
        raise ValueError(f"under torch.distributed every member of every family trains for the same number of "
                         f"steps; these train for {steps}")


def train_family(source, cfgs: list[TrainConfig], *, checkpoint: Path | None = None, progress: bool = True,
                 on_batch: Callable[[int, torch.Tensor], None] | None = None,
                 snapshots: list[dict[int, Callable[[SAEBase, list[dict]], None]]] | None = None,
                 device: str = "cpu", desc: str | None = None,
                 checkpoint_every_s: float = 60.0, tf32: bool = True) -> list[tuple[SAEBase, list[dict]]]:
    """Train every config of `cfgs` on the batches of `source`, all on the same batch at each step.

    Returns one (SAE on the CPU, log) per config; a member trains for its own `n_tokens // batch_size`
    steps. With `checkpoint` set, state is saved there every `checkpoint_every_s` (by rank 0; a plain tensor file
    read back with `weights_only=True`) and a run finding it resumes from it. Initialisation is
    drawn on the CPU, so a seed gives the same starting SAE on every device and world size. On CUDA,
    `tf32` lets fp32 matmuls run on TF32 tensor cores (10-bit mantissa products, fp32 accumulation;
    `bench/gpu_check.py` measures both); the CPU ignores it. A member with `autocast="bf16"` runs its
    forward under bf16 autocast, on the CPU as on CUDA (module docstring).

    `snapshots[i]` maps a token count n < cfgs[i].n_tokens to a callback given (SAE, log) once n
    tokens have been trained on. The batch order of a shorter run is a prefix of a longer one's and
    the learning rate is constant after warm-up, so the snapshot *is* the SAE that
    `replace(cfg, n_tokens=n)` trains, log included (tests check they are identical).

    `on_batch(step, x)` sees each step's batch before the members step on it. One family of
    `train_families` (see there for several sources at once).
    """
    wrapped = None if on_batch is None else (lambda step, xs: on_batch(step, xs[0]))
    (out,) = train_families([(source, cfgs)], checkpoint=checkpoint, progress=progress, on_batch=wrapped,
                            snapshots=[snapshots] if snapshots is not None else None, device=device, desc=desc,
                            checkpoint_every_s=checkpoint_every_s, tf32=tf32)
    return out


def train_families(families: list[tuple[object, list[TrainConfig]]], *, checkpoint: Path | None = None,
                   progress: bool = True, on_batch: Callable[[int, list[torch.Tensor]], None] | None = None,
                   snapshots: list[list[dict[int, Callable[[SAEBase, list[dict]], None]]] | None] | None = None,
                   device: str = "cpu", desc: str | None = None, checkpoint_every_s: float = 60.0,
                   tf32: bool = True) -> list[list[tuple[SAEBase, list[dict]]]]:
    """Train several families at once, each on its own batch source: `families` is [(source, configs), …].

    At every step each source hands out one batch (`source.batch(step, rank, world)`) and every member of
    its family steps on it, so with the per-hookpoint views of one multi-hookpoint `stream.ModelSource`
    (`source.view(h)`) the SAEs of every hookpoint train in one pass, one model forward per chunk for all
    of them. Each member is the SAE `train_family(source, [cfg])` trains, bit for bit: members share
    nothing but the loop (same initialisation, same batches in the same order, same arithmetic);
    tests/test_stream.py checks it. A source whose members have all finished is read no further.

    Returns, per family, one (SAE on the CPU, log) per config. `snapshots[f][i]` is `train_family`'s
    `snapshots[i]` for member i of family f; `on_batch(step, xs)` gets every family's batch (xs[f], None for
    a family already done); `checkpoint` holds every family's state (the member order is the families').
    Under torch.distributed every member of every family trains for the same number of steps.
    """
    rank, world = distributed.world()
    _check_families(families, world)
    cfgs = [c for _, fam in families for c in fam]
    if device.startswith("cuda") and any(c.autocast == "bf16" for c in cfgs) and not torch.cuda.is_bf16_supported():
        raise ValueError(f"autocast='bf16' needs a GPU with bf16 support; {torch.cuda.get_device_name(device)} has none")
    if snapshots is not None and len(snapshots) != len(families):
        raise ValueError(f"snapshots has {len(snapshots)} entries for {len(families)} families")
    snaps = [s for (_, fam), fs in zip(families, snapshots or [None] * len(families)) for s in (fs or [{}] * len(fam))]
    if len(snaps) != len(cfgs):
        raise ValueError("snapshots needs one mapping per member of each family")
    member_of = [f for f, (_, fam) in enumerate(families) for _ in fam]
    with _matmul_precision(device, tf32):
        res = _train_family([s for s, _ in families], member_of, cfgs, checkpoint, progress, on_batch, snaps, device,
                            desc, checkpoint_every_s, rank, world)
    out, i = [], 0
    for _, fam in families:
        out.append(res[i:i + len(fam)])
        i += len(fam)
    return out


@contextlib.contextmanager
def _matmul_precision(device: str, tf32: bool):
    if not device.startswith("cuda"):
        yield
        return
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def _train_family(sources, member_of, cfgs, checkpoint, progress, on_batch, snapshots, device, desc,
                  checkpoint_every_s, rank, world):
    """The loop of `train_families`: member i reads `sources[member_of[i]]`."""
    saes = [make_sae(c, sources[f].d_in) for c, f in zip(cfgs, member_of)]
    steps = [c.n_tokens // c.batch_size for c in cfgs]
    source_steps = [max(n for n, f in zip(steps, member_of) if f == g) for g in range(len(sources))]
    snaps = [_snapshot_steps(c, s) for c, s in zip(cfgs, snapshots)]
    st = _load_checkpoint(checkpoint, len(cfgs), device)
    x0s = [src.init_batch(rank, world) for src in sources]
    for sae, c, f in zip(saes, cfgs, member_of):
        x0 = x0s[f]
        if hasattr(sae, "init_from_data"):  # also on resume: it sets non-parameter state (JumpReLU's ε)
            sae.init_from_data(x0, c)
        with torch.no_grad():  # data-dependent, seed-independent: same b_dec start for every seed
            sae.b_dec.copy_(x0.mean(0))
    del x0s
    for sae, c in zip(saes, cfgs):
        if c.freeze == "soft_decoder":  # the cone's axis: in the state, so a resumed run keeps it
            sae.register_buffer("dec_init", sae.W_dec.detach().clone())
    family = _Family(saes).to(device)
    if torch.device(device).type == "cpu":
        _retain_freed_memory()
    opts = [_Adam(s, c.lr, device) for s, c in zip(family.members, cfgs)]
    last_fired = [torch.zeros(c.d_sae, dtype=torch.long, device=device) for c in cfgs]  # tokens since last fired
    logs: list[list[dict]] = [[] for _ in cfgs]
    start = 0
    if st is not None:
        for m, opt, mst in zip(family.members, opts, st["members"]):
            m.load_state_dict(mst["sae"])
            opt.load_state_dict(mst["opt"])
        last_fired = [mst["last_fired"] for mst in st["members"]]
        logs, start = [mst["log"] for mst in st["members"]], st["step"]
    stepper = family
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # buffers (BatchTopK's threshold) follow rank 0's, as DDP syncs them by default
        stepper = DistributedDataParallel(family, device_ids=[torch.device(device).index] if device.startswith("cuda")
                                          else None)
    t_save = time.perf_counter()
    n_steps = max(steps)
    label = desc or (f"SAE seed {cfgs[0].seed}" if len(cfgs) == 1 else f"{len(cfgs)} SAEs" +
                     (f" on {len(sources)} sources" if len(sources) > 1 else ""))
    bar = tqdm(range(start, n_steps), total=n_steps, initial=start, disable=not progress or rank != 0,
               desc=label, unit="step")
    for step in bar:
        # every rank reads the sources in the same order (a streamed chunk is all-gathered across ranks)
        xs = [src.batch(step, rank, world) if step < n else None for src, n in zip(sources, source_steps)]
        if on_batch is not None:
            on_batch(step, xs)
        xs = [x.to(device, non_blocking=True) if x is not None else None for x in xs]
        active = [i for i, n in enumerate(steps) if step < n]
        deads = [last_fired[i] >= cfgs[i].dead_tokens for i in range(len(cfgs))]
        if world > 1:
            outs = _ddp_step(stepper, family, opts, [xs[f] for f in member_of], deads, cfgs, step, world)
        else:
            outs = {}
            for i in active:
                outs[i] = _local_step(family.members[i], opts[i], xs[member_of[i]], deads[i], cfgs[i], step)
        for i, out in outs.items():
            c = cfgs[i]
            with torch.no_grad():
                last_fired[i] += xs[member_of[i]].shape[0] * world
                last_fired[i][out.fired] = 0
            if step % c.log_every == 0 or step == steps[i] - 1 or step in snaps[i]:
                rec = {"step": step, "tokens": (step + 1) * c.batch_size, "fvu": out.fvu.item(), "l0": out.l0,
                       "dead_frac": float(deads[i].float().mean()),
                       "aux": out.aux.item() if torch.is_tensor(out.aux) else float(out.aux)}
                logs[i].append(rec)
                if i == 0:
                    bar.set_postfix(fvu=f"{rec['fvu']:.3f}", dead=f"{rec['dead_frac']:.2f}", refresh=False)
            if step in snaps[i]:  # the shorter run's log holds only its own records
                snap_log = [r for r in logs[i] if r["step"] % c.log_every == 0 or r["step"] == step]
                snaps[i][step](family.members[i], snap_log)
        if checkpoint is not None and rank == 0 and time.perf_counter() - t_save >= checkpoint_every_s:
            _save_checkpoint(checkpoint, family, opts, last_fired, logs, step + 1)
            t_save = time.perf_counter()
    return [(m.cpu(), log) for m, log in zip(family.members, logs)]


class _Adam:
    """Adam over an SAE's parameters, fused (one pass over each parameter, its gradient and both moments: 8x the
    default per-tensor Adam on the CPU), with every parameter handed to the kernel contiguous.

    The fused kernel copies a non-contiguous parameter, its gradient and both moments to contiguous buffers and
    back every step; TopKSAE's W_enc [D, F] is stored column-major (topk.py), which cost 3 ms of a 4,096-token
    step here (5.6 vs 2.5 ms for Adam on W_enc and W_dec, bench/RESULTS.md). Such a parameter is given to Adam as
    its transpose, a contiguous alias of the same storage, and before each step its gradient as the same view of
    the gradient, so Adam updates the parameter in place with no copy. The update is elementwise: the numbers are
    the plain Adam's, bit for bit. The moments of an alias are [F, D] (a checkpoint holds them in that shape)."""

    def __init__(self, sae: nn.Module, lr: float, device: str):
        self.sae, self.aliases, params = sae, [], []
        for p in sae.parameters():
            if p.dim() == 2 and not p.is_contiguous() and p.t().is_contiguous():
                alias = nn.Parameter(p.detach().t())  # shares p's storage
                self.aliases.append((p, alias))
                params.append(alias)
            else:
                params.append(p)
        self.opt = torch.optim.Adam(params, lr=lr, fused=torch.device(device).type in ("cpu", "cuda"))

    @property
    def param_groups(self) -> list[dict]:  # a property: load_state_dict replaces the optimiser's list
        return self.opt.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sae.zero_grad(set_to_none=set_to_none)
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for p, alias in self.aliases:  # a gradient of another layout (AuxK's dense one) is copied by the kernel
            alias.grad = None if p.grad is None else p.grad.t()
        self.opt.step()

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
        for _, alias in self.aliases:  # moments saved in the parameter's own shape (before the alias): transpose
            for key, t in self.opt.state.get(alias, {}).items():
                if torch.is_tensor(t) and t.dim() == 2 and t.shape != alias.shape and t.t().shape == alias.shape:
                    self.opt.state[alias][key] = t.t().contiguous()


_MALLOC_SET: list = []


def _retain_freed_memory() -> None:
    """Let glibc's malloc keep freed blocks of up to 32 MB for reuse instead of returning them to the kernel.

    The CPU step frees and allocates the same [B, D] and [F, D] temporaries every step (9-10 MB at B = 4,096,
    D = 576, F = 4,608). By default glibc serves blocks that large with mmap and unmaps them on free, so each
    fresh one costs a page fault per 4 KB page on first touch: ~2 ms per temporary on our virtual machines, about
    10% of a bf16 step (bench/RESULTS.md). With the mmap threshold at its maximum (32 MB) and a 1 GB trim
    threshold they come from the heap, already mapped. The peak memory is the same; the process keeps up to 1 GB
    more mapped after it. Once per process, glibc only; `SAESANITY_MALLOC=system` leaves malloc as it is."""
    import ctypes
    import os
    import platform

    if _MALLOC_SET or os.environ.get("SAESANITY_MALLOC", "").lower() == "system" or platform.system() != "Linux":
        return
    _MALLOC_SET.append(True)
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
        libc.mallopt(M_TOP_PAD, 64 << 20)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        pass


def _snapshot_steps(cfg: TrainConfig, snapshots: dict[int, Callable]) -> dict[int, Callable]:
    if snapshots and cfg.lr_schedule != "constant":
        raise ValueError(f"snapshots need a constant learning rate: under lr_schedule={cfg.lr_schedule!r} a shorter "
                         "run decays to 0 at its own end, so it is not a prefix of a longer one (train it separately)")
    out = {}
    for n, fn in snapshots.items():
        if not cfg.batch_size <= n < cfg.n_tokens:
            raise ValueError(f"snapshot at {n:,} tokens: must lie in [batch_size, n_tokens) = "
                             f"[{cfg.batch_size:,}, {cfg.n_tokens:,})")
        out[n // cfg.batch_size - 1] = fn
    return out


def lr_at(cfg: TrainConfig, step: int) -> float:
    """The learning rate of step `step` (0-based): lr · (step + 1) / warmup_steps during the warm-up; then lr
    (constant), or lr · (steps − step) / (steps − warmup_steps) (linear, reaching 0 after the last of the
    n_tokens // batch_size steps, as transformers' get_linear_schedule_with_warmup, which sparsify uses)."""
    warm = max(cfg.warmup_steps, 1)
    if step < warm or cfg.lr_schedule == "constant":
        return cfg.lr * min(1.0, (step + 1) / warm)
    steps = cfg.n_tokens // cfg.batch_size
    return cfg.lr * max(0.0, (steps - step) / max(steps - warm, 1))


def _set_lr(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, step)


@torch.no_grad()
def _constrain(sae: SAEBase, cfg: TrainConfig, stage: str) -> None:
    """`cfg.freeze` around the optimiser step. stage "grads" (after the backward): a frozen weight's gradient is
    dropped, so Adam never moves it (the decoder's unit-norm renormalisation may round it by an ulp); stage "weights" (after the step and the decoder's
    renormalisation): soft_decoder moves each unit row w whose cosine with its initialisation w0 fell below
    c = freeze_min_cos onto the cone's edge, w <- c w0 + sqrt(1 - c^2) u, u the unit part of w orthogonal to w0."""
    if cfg.freeze == "none":
        return
    if stage == "grads":
        frozen = {"decoder": sae.W_dec, "encoder": sae.W_enc}.get(cfg.freeze)
        if frozen is not None:
            frozen.grad = None
        return
    if cfg.freeze == "soft_decoder":
        w, w0, c = sae.W_dec, sae.dec_init, cfg.freeze_min_cos
        cos = torch.linalg.vecdot(w, w0)
        out = cos < c
        if out.any():
            u = w[out] - cos[out, None] * w0[out]
            u = u / torch.linalg.vector_norm(u, dim=1, keepdim=True).clamp_min(1e-12)
            w[out] = c * w0[out] + (1 - c * c) ** 0.5 * u


def _local_step(sae: SAEBase, opt, x: torch.Tensor, dead: torch.Tensor, cfg: TrainConfig, step: int) -> StepOut:
    _set_lr(opt, cfg, step)
    with autocast(cfg, x.device):  # the forward only: the backward runs in the dtypes it recorded
        out = sae.training_step(x, dead, cfg)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    _constrain(sae, cfg, "grads")
    sae.remove_parallel_grad()
    opt.step()
    sae.normalize_decoder()
    _constrain(sae, cfg, "weights")
    return out


def _ddp_step(stepper, family: _Family, opts, xs, deads, cfgs, step: int, world: int) -> dict[int, StepOut]:
    """One step of every member (member i on its batch xs[i]) under DDP. Losses are rank shares of the global
    loss (`sharded`), so the sum over ranks is the global loss; DDP averages gradients, hence the factor `world`."""
    import torch.distributed as dist

    for opt, c in zip(opts, cfgs):
        _set_lr(opt, c, step)
        opt.zero_grad(set_to_none=True)
    with sharded(world):
        outs = stepper(xs, deads, cfgs)
    (sum(o.loss for o in outs) * world).backward()
    for m, opt, c in zip(family.members, opts, cfgs):
        _constrain(m, c, "grads")
        m.remove_parallel_grad()
        opt.step()
        m.normalize_decoder()
        _constrain(m, c, "weights")
    result = {}
    for i, o in enumerate(outs):
        fired = o.fired.to(torch.int32)
        stats = torch.stack([o.fvu.detach().float(), torch.tensor(o.l0 / world, device=o.fvu.device)])
        dist.all_reduce(fired, op=dist.ReduceOp.MAX)
        dist.all_reduce(stats)
        aux = o.aux.detach() if torch.is_tensor(o.aux) else torch.tensor(float(o.aux), device=stats.device)
        dist.all_reduce(aux)
        result[i] = StepOut(o.loss.detach(), stats[0], float(stats[1]), fired.bool(), aux)
    return result


def _load_checkpoint(path: Path | None, n_members: int, device: str) -> dict | None:
    """The state saved at `path`, or None (no file, or one this family cannot use: then training restarts)."""
    if path is None or not path.exists():
        return None
    try:
        st = torch.load(path, weights_only=True, map_location=device)
        if len(st["members"]) != n_members or not isinstance(st["step"], int):
            raise ValueError(f"it holds {len(st['members'])} SAEs, this family {n_members}")
        return st
    except Exception as err:  # truncated, foreign or from an older version: never trust it
        first = (str(err).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"checkpoint {path} cannot be resumed from ({type(err).__name__}: {first}); "
                      "training restarts from step 0")
        path.unlink(missing_ok=True)
        return None


def _save_checkpoint(path: Path, family: _Family, opts, last_fired, logs, step: int) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"members": [{"sae": m.state_dict(), "opt": o.state_dict(), "last_fired": lf, "log": lg}
                            for m, o, lf, lg in zip(family.members, opts, last_fired, logs)], "step": step}, tmp)
    tmp.replace(path)


def train_sae(acts: np.ndarray, cfg: TrainConfig, *, checkpoint: Path | None = None, progress: bool = True,
              on_batch: Callable[[int, torch.Tensor], None] | None = None,
              snapshots: dict[int, Callable[[SAEBase, list[dict]], None]] | None = None,
              device: str = "cpu") -> tuple[SAEBase, list[dict]]:
    """Train one SAE on `acts` [N, D] in `batch_order(N, cfg)`: `train_family` of one member (see there)."""
    source = MemmapSource(acts, batch_order(acts.shape[0], cfg))
    ((sae, log),) = train_family(source, [cfg], checkpoint=checkpoint, progress=progress, on_batch=on_batch,
                                 snapshots=[snapshots or {}], device=device)
    return sae, log
