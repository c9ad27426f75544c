"""One training loop for every SAE architecture on a cached activation array.

The seed sets only the initialisation: the batch order is a permutation drawn from `data_seed`,
so SAEs of different seeds see exactly the same batches in the same order. `b_dec` starts at the
mean of the first batch (data-dependent, the same for every seed).

Each architecture's loss is in its `training_step` (`topk.py`, `arch.py`); all use the FVU centred on
the batch mean (`metrics.fvu`) as the reconstruction term. TopK and BatchTopK add
auxk_alpha · FVU(e, ê): e = x − x̂ reconstructed from the `k_aux` = D/2 most active *dead* latents
(AuxK, Gao et al. 2024); a latent is dead when it has not fired in the last `dead_tokens` training
tokens. After every step the decoder rows are renormalised to unit norm and, before it, the
gradient component parallel to each row is removed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from .arch import ARCHITECTURES
from .base import SAEBase
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
    architecture: str = "topk"  # topk | batchtopk | relu | gated | jumprelu
    l1_coefficient: float = 1.0  # λ₁ of ReLU and Gated SAEs (scale-free, see sae.base)
    l0_coefficient: float = 1e-3  # λ₀ of JumpReLU SAEs
    jumprelu_init_threshold: float = 1e-3  # in units of s/√D of the first batch
    jumprelu_bandwidth: float = 1e-3  # ε of the straight-through estimator, same units

    def key(self) -> dict:
        """The fields that define this SAE: the ones its architecture uses (the cache key)."""
        unused = {"topk": ARCH_ONLY_FIELDS, "batchtopk": ARCH_ONLY_FIELDS,
                  "relu": ARCH_ONLY_FIELDS - {"l1_coefficient"} | {"k", "auxk_alpha", "dead_tokens"},
                  "gated": ARCH_ONLY_FIELDS - {"l1_coefficient"} | {"k", "auxk_alpha", "dead_tokens"},
                  "jumprelu": ARCH_ONLY_FIELDS - {"l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"}
                  | {"k", "auxk_alpha", "dead_tokens"}}[self.architecture]
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in unused}


ARCH_ONLY_FIELDS = {"l1_coefficient", "l0_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth"}


def make_sae(cfg: TrainConfig, d_in: int) -> SAEBase:
    if cfg.architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {cfg.architecture!r}; valid: {list(ARCHITECTURES)}")
    cls = ARCHITECTURES[cfg.architecture]
    if issubclass(cls, TopKSAE):
        if not 0 < cfg.k < cfg.d_sae:
            raise ValueError(f"k={cfg.k} must satisfy 0 < k < d_sae={cfg.d_sae}")
        return cls(d_in, cfg.d_sae, cfg.k, seed=cfg.seed)
    return cls(d_in, cfg.d_sae, seed=cfg.seed)


def batch_order(n_rows: int, cfg: TrainConfig) -> np.ndarray:
    """[n_steps, batch_size] row indices: a `data_seed` permutation, each batch sorted for locality."""
    n_steps = cfg.n_tokens // cfg.batch_size
    if n_steps < 1:
        raise ValueError(f"n_tokens={cfg.n_tokens} is less than one batch of {cfg.batch_size}")
    if n_steps * cfg.batch_size > n_rows:
        raise ValueError(f"n_tokens={cfg.n_tokens:,} exceeds the {n_rows:,} activation rows available")
    perm = np.random.default_rng(cfg.data_seed).permutation(n_rows)[: n_steps * cfg.batch_size]
    return np.sort(perm.reshape(n_steps, cfg.batch_size), axis=1)


def train_sae(acts: np.ndarray, cfg: TrainConfig, *, checkpoint: Path | None = None, progress: bool = True,
              on_batch: Callable[[int, torch.Tensor], None] | None = None,
              snapshots: dict[int, Callable[[SAEBase, list[dict]], None]] | None = None,
              device: str = "cpu") -> tuple[SAEBase, list[dict]]:
    """Train an SAE on `acts` [N, D]; returns the SAE (on the CPU) and its log (one dict per `log_every` steps).

    With `checkpoint` set, state is saved there every 60 s and a run finding it resumes from it.
    Initialisation is drawn on the CPU, so a seed gives the same starting SAE on every device.

    `snapshots` maps a token count n < cfg.n_tokens to a callback given (SAE, log) once n tokens have
    been trained on. The batch order of a shorter run is a prefix of a longer one's and the learning
    rate is constant after warm-up, so the snapshot *is* the SAE that `replace(cfg, n_tokens=n)`
    trains, log included (tests check they are identical): one run gives every point of a
    training-length sweep.
    """
    n_rows, d_in = acts.shape
    sae = make_sae(cfg, d_in)
    order = batch_order(n_rows, cfg)
    snap_steps = {}
    for n, fn in (snapshots or {}).items():
        if not cfg.batch_size <= n < cfg.n_tokens:
            raise ValueError(f"snapshot at {n:,} tokens: must lie in [batch_size, n_tokens) = "
                             f"[{cfg.batch_size:,}, {cfg.n_tokens:,})")
        snap_steps[n // cfg.batch_size - 1] = fn
    if hasattr(sae, "init_from_data"):
        sae.init_from_data(torch.from_numpy(np.asarray(acts[order[0]], dtype=np.float32)), cfg)
    sae = sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    last_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)  # tokens since each latent last fired
    log: list[dict] = []
    start = 0
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, weights_only=False, map_location=device)
        sae.load_state_dict(st["sae"])
        opt.load_state_dict(st["opt"])
        last_fired, log, start = st["last_fired"], st["log"], st["step"]
    elif n_rows:
        with torch.no_grad():  # data-dependent, seed-independent: same b_dec start for every seed
            sae.b_dec.copy_(torch.from_numpy(np.asarray(acts[order[0]])).mean(0).to(device))
    t_save = time.perf_counter()
    bar = tqdm(range(start, len(order)), total=len(order), initial=start, disable=not progress,
               desc=f"SAE seed {cfg.seed}", unit="step")
    for step in bar:
        x = torch.from_numpy(np.asarray(acts[order[step]], dtype=np.float32))
        if not torch.isfinite(x).all():
            bad = int(order[step][int(torch.nonzero(~torch.isfinite(x).all(1))[0])])
            raise ValueError(f"activations contain NaN/inf (row {bad:,}, batch {step}); refusing to train on them")
        if on_batch is not None:
            on_batch(step, x)
        x = x.to(device, non_blocking=True)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
        dead = last_fired >= cfg.dead_tokens
        out = sae.training_step(x, dead, cfg)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        sae.remove_parallel_grad()
        opt.step()
        sae.normalize_decoder()
        with torch.no_grad():
            last_fired += x.shape[0]
            last_fired[out.fired] = 0
        if step % cfg.log_every == 0 or step == len(order) - 1 or step in snap_steps:
            rec = {"step": step, "tokens": (step + 1) * cfg.batch_size, "fvu": out.fvu.item(), "l0": out.l0,
                   "dead_frac": float(dead.float().mean()),
                   "aux": out.aux.item() if torch.is_tensor(out.aux) else float(out.aux)}
            log.append(rec)
            bar.set_postfix(fvu=f"{rec['fvu']:.3f}", dead=f"{rec['dead_frac']:.2f}", refresh=False)
        if step in snap_steps:  # the shorter run's log holds only its own records
            snap_log = [r for r in log if r["step"] % cfg.log_every == 0 or r["step"] == step]
            snap_steps[step](sae, snap_log)
        if checkpoint is not None and time.perf_counter() - t_save > 60:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"sae": sae.state_dict(), "opt": opt.state_dict(), "last_fired": last_fired,
                        "log": log, "step": step + 1}, tmp)
            tmp.replace(checkpoint)
            t_save = time.perf_counter()
    return sae.cpu(), log

