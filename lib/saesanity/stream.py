"""Training batches straight from the model's forward pass: no activation cache, bounded memory.

`ModelSource` is a batch source for `sae.train.train_family` (like `MemmapSource`, whose array it
replaces). It numbers activation rows as `activations.collect` lays them out — row = sequence ·
(seq_len − drop_first) + position − drop_first — and serves them in *chunks* of R = batches_per_chunk
· batch_size consecutive rows: a chunk's sequences go through the model (in forward batches of
`model_batch_size` sequences aligned as `collect` aligns them, so the activations — and the control
variant's noise — are the ones `collect` would cache), its R rows are permuted by a generator seeded
with (seed, chunk) and cut into `batches_per_chunk` batches, each sorted as `batch_order` sorts them.

So a chunk is a shuffle buffer of R rows: memory is one chunk's activations (R × d_model floats) and
nothing is written to disk; any step can be served without replaying the ones before it (a resumed
run recomputes one chunk). `order()` gives the row indices of every step, and `MemmapSource(acts,
source.order())` over `collect`'s array trains bitwise the same SAEs (tests/test_stream.py).

Several hookpoints: `ModelSource(lm, tokens, [h1, h2, …])` runs one forward per chunk for all of them
(`activations.run_to_hookpoints` of the list, stopped after the deepest) and holds one chunk per
hookpoint (R × d_model floats each); `source.view(h)` is hookpoint h's batch source (the same rows, the
same `order()`), so `sae.train.train_families([(source.view(h), cfgs_h), …])` trains every hookpoint's
SAEs in one pass. A hookpoint's activations do not depend on which others are taken with it (a layer's
output does not depend on where the forward stops), so each view serves bitwise the batches of a
single-hookpoint source over the same tokens (tests/test_stream.py).

Data parallel: the sequences are sharded by rank — rank r of W runs the forward pass of the r-th
W-th of each chunk's rows only — and the chunk is then all-gathered (R × d_model floats once per
`batches_per_chunk` steps), so every rank holds the chunk and takes its contiguous slice of each
global batch, as `MemmapSource` slices `order()`. The global batches are those of one rank: results
do not depend on the world size (to float reassociation), and one cache key serves every launch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .activations import parse_hookpoint, run_to_hookpoints
from .models import GaussianEmbedding, LoadedModel


class ModelSource:
    """Batches [batch_size / W, d_model] fp32 from `lm`'s forward pass over `tokens` [n_seqs, seq_len], at
    `hookpoint` — or, given a list of hookpoints, at each of them through `view(h)` (module docstring).

    `n_steps` defaults to every whole batch the tokens hold, rounded down to whole chunks.
    """

    def __init__(self, lm: LoadedModel, tokens: np.ndarray, hookpoint: str | list[str], *, batch_size: int,
                 batches_per_chunk: int = 8, n_steps: int | None = None, model_batch_size: int = 8,
                 drop_first: int = 1, seed: int = 0, device: str = "cpu"):
        seq_len = tokens.shape[1]
        hookpoints = [hookpoint] if isinstance(hookpoint, str) else list(hookpoint)
        if not hookpoints or len(set(hookpoints)) != len(hookpoints):
            raise ValueError(f"hookpoints {hookpoints}: need at least one, each named once")
        for h in hookpoints:
            parse_hookpoint(h, lm.n_layers, lm.name)
        if not 0 <= drop_first < seq_len - 1:
            raise ValueError(f"drop_first={drop_first} must be below seq_len-1={seq_len - 1}")
        if batch_size < 1 or batches_per_chunk < 1 or model_batch_size < 1:
            raise ValueError(f"batch_size={batch_size}, batches_per_chunk={batches_per_chunk} and "
                             f"model_batch_size={model_batch_size} must be >= 1")
        self.lm, self.tokens, self.hookpoints = lm, tokens, hookpoints
        self.hookpoint = hookpoint if isinstance(hookpoint, str) else None  # a single-hookpoint source's
        self.batch_size, self.batches_per_chunk = batch_size, batches_per_chunk
        self.model_batch_size, self.drop_first, self.seed, self.device = model_batch_size, drop_first, seed, device
        self.per_seq = seq_len - drop_first
        self.chunk_rows = batch_size * batches_per_chunk
        max_steps = (tokens.shape[0] * self.per_seq // self.chunk_rows) * batches_per_chunk
        if n_steps is None:
            n_steps = max_steps
        if not 1 <= n_steps <= max_steps:
            raise ValueError(f"{n_steps:,} steps of {batch_size:,} rows need {n_steps * batch_size:,} activation rows in "
                             f"whole chunks of {self.chunk_rows:,}; {tokens.shape[0]:,} sequences give {max_steps:,} steps")
        self.n_steps = n_steps
        self.d_in = lm.d_model
        # (chunk index, {hookpoint: [chunk_rows, d] activations}, its permutation): one chunk per hookpoint held
        self._chunk: tuple[int, dict[str, torch.Tensor], np.ndarray] | None = None

    # ---------------------------------------------------------------- row bookkeeping
    def _perm(self, chunk: int) -> np.ndarray:
        """[batches_per_chunk, batch_size] row offsets into the chunk, each batch sorted."""
        perm = np.random.default_rng([self.seed, chunk]).permutation(self.chunk_rows)
        return np.sort(perm.reshape(self.batches_per_chunk, self.batch_size), axis=1)

    def order(self) -> np.ndarray:
        """[n_steps, batch_size] global row indices of every step's batch (whatever the world size), the
        same at every hookpoint."""
        out = [c * self.chunk_rows + self._perm(c) for c in range(math.ceil(self.n_steps / self.batches_per_chunk))]
        return np.concatenate(out)[: self.n_steps]

    # ---------------------------------------------------------------- activations
    @torch.no_grad()
    def _rows(self, lo: int, hi: int) -> dict[str, torch.Tensor]:
        """{hookpoint: activations [hi − lo, d] fp32} of global rows [lo, hi), one forward per batch of
        sequences for every hookpoint, batches aligned as `collect` aligns them."""
        first, last = lo // self.per_seq, (hi - 1) // self.per_seq
        mbs = self.model_batch_size
        emb = self.lm.model.get_input_embeddings()
        parts: dict[str, list[torch.Tensor]] = {h: [] for h in self.hookpoints}
        for b in range(first // mbs * mbs, last + 1, mbs):
            if isinstance(emb, GaussianEmbedding):
                emb.call_index = b // mbs  # the noise `collect` draws for this batch
            ids = torch.from_numpy(np.asarray(self.tokens[b:b + mbs], dtype=np.int64)).to(self.device)
            acts = run_to_hookpoints(self.lm, ids, self.hookpoints)
            for h in self.hookpoints:
                a = acts[h][:, self.drop_first:, :]
                parts[h].append(a.reshape(-1, a.shape[-1]).float())
            del acts
        base = first // mbs * mbs * self.per_seq
        out = {}
        for h in self.hookpoints:
            x = torch.cat(parts.pop(h))[lo - base:hi - base]
            if not torch.isfinite(x).all():
                raise ValueError(f"activations at {h} contain NaN/inf (rows {lo:,}–{hi - 1:,} of "
                                 f"{self.lm.spec} {self.lm.variant}); refusing to train on them")
            out[h] = x
        return out

    def _chunk_rows(self, chunk: int, rank: int, world: int) -> dict[str, torch.Tensor]:
        """{hookpoint: [chunk_rows, d]} activations of `chunk`; under W ranks each computes its W-th and all-gathers."""
        lo = chunk * self.chunk_rows
        if world == 1:
            return self._rows(lo, lo + self.chunk_rows)
        import torch.distributed as dist

        if self.chunk_rows % world or self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the world size {world}")
        per = self.chunk_rows // world
        mine = self._rows(lo + rank * per, lo + (rank + 1) * per)
        out = {}
        for h in self.hookpoints:  # the same order on every rank
            parts = [torch.empty_like(mine[h]) for _ in range(world)]
            dist.all_gather(parts, mine.pop(h).contiguous())
            out[h] = torch.cat(parts)
        return out

    def _batch(self, hookpoint: str, step: int, rank: int, world: int) -> torch.Tensor:
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} outside [0, {self.n_steps})")
        if world > 1 and self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the world size {world}")
        chunk = step // self.batches_per_chunk
        if self._chunk is None or self._chunk[0] != chunk:
            self._chunk = None  # free the previous chunk before computing the next
            self._chunk = (chunk, self._chunk_rows(chunk, rank, world), self._perm(chunk))
        _, rows, perm = self._chunk
        idx = perm[step % self.batches_per_chunk]
        if world > 1:
            per = self.batch_size // world
            idx = idx[rank * per:(rank + 1) * per]
        # on the model's device: the training loop's .to(device) is then free
        x = rows[hookpoint]
        return x.index_select(0, torch.from_numpy(idx).to(x.device))

    def _init_batch(self, hookpoint: str, rank: int, world: int) -> torch.Tensor:
        x = self._batch(hookpoint, 0, rank, world)
        if world == 1:
            return x
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    def _single(self) -> str:
        if self.hookpoint is None:
            raise ValueError(f"this ModelSource serves hookpoints {self.hookpoints}: take one's batches with view(h)")
        return self.hookpoint

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rank's contiguous slice of global batch `step` (the whole batch with one rank); a single-hookpoint source."""
        return self._batch(self._single(), step, rank, world)

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The batch initialisation is drawn from: the whole first batch, on every rank (as `MemmapSource`)."""
        return self._init_batch(self._single(), rank, world)

    def view(self, hookpoint: str) -> "HookpointView":
        """Hookpoint `hookpoint`'s batch source, sharing this source's chunks with every other view."""
        if hookpoint not in self.hookpoints:
            raise ValueError(f"hookpoint {hookpoint!r} is not one this source serves: {self.hookpoints}")
        return HookpointView(self, hookpoint)


class HookpointView:
    """One hookpoint of a `ModelSource`: a batch source (`batch`, `init_batch`, `n_steps`, `batch_size`, `d_in`,
    `order`) whose chunks are computed once, by whichever view first needs them, for every hookpoint."""

    def __init__(self, source: ModelSource, hookpoint: str):
        self.source, self.hookpoint = source, hookpoint
        self.n_steps, self.batch_size, self.d_in = source.n_steps, source.batch_size, source.d_in

    def order(self) -> np.ndarray:
        return self.source.order()

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Rank's contiguous slice of global batch `step` at this hookpoint (`ModelSource.batch`)."""
        return self.source._batch(self.hookpoint, step, rank, world)

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The whole first batch at this hookpoint, on every rank (`ModelSource.init_batch`)."""
        return self.source._init_batch(self.hookpoint, rank, world)
