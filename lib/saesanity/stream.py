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

Data parallel: rank r of W serves, from each chunk, its own contiguous R/W rows (the sequences are
sharded by rank: each rank runs the forward of its own rows' sequences only), permuted by
(seed, chunk, r) and cut into per-rank batches of batch_size/W rows. The global batch is then the
union of the ranks' slices; with W = 1 it is the chunk permutation above. (Unlike the memmap path,
which slices one global order, the streamed global batch depends on W; its statistics do not.)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .activations import run_to_hookpoints
from .models import GaussianEmbedding, LoadedModel


class ModelSource:
    """Batches [batch_size / W, d_model] fp32 from `lm`'s forward pass over `tokens` [n_seqs, seq_len].

    `n_steps` defaults to every whole batch the tokens hold, rounded down to whole chunks.
    """

    def __init__(self, lm: LoadedModel, tokens: np.ndarray, hookpoint: str, *, batch_size: int,
                 batches_per_chunk: int = 8, n_steps: int | None = None, model_batch_size: int = 8,
                 drop_first: int = 1, seed: int = 0, device: str = "cpu"):
        seq_len = tokens.shape[1]
        if not 0 <= drop_first < seq_len - 1:
            raise ValueError(f"drop_first={drop_first} must be below seq_len-1={seq_len - 1}")
        if batch_size < 1 or batches_per_chunk < 1 or model_batch_size < 1:
            raise ValueError(f"batch_size={batch_size}, batches_per_chunk={batches_per_chunk} and "
                             f"model_batch_size={model_batch_size} must be >= 1")
        self.lm, self.tokens, self.hookpoint = lm, tokens, hookpoint
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
        self._chunk: tuple[tuple[int, int, int], torch.Tensor, np.ndarray] | None = None

    # ---------------------------------------------------------------- row bookkeeping
    def _span(self, chunk: int, rank: int, world: int) -> tuple[int, int]:
        """[lo, hi) global rows of `chunk` served by `rank`."""
        if self.chunk_rows % world or self.batch_size % world:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by the world size {world}")
        per = self.chunk_rows // world
        lo = chunk * self.chunk_rows + rank * per
        return lo, lo + per

    def _perm(self, chunk: int, rank: int, world: int) -> np.ndarray:
        """[batches_per_chunk, batch_size/W] row offsets into the rank's span, each batch sorted."""
        per = self.chunk_rows // world
        key = [self.seed, chunk] if world == 1 else [self.seed, chunk, rank, world]
        perm = np.random.default_rng(key).permutation(per)
        return np.sort(perm.reshape(self.batches_per_chunk, per // self.batches_per_chunk), axis=1)

    def order(self, rank: int = 0, world: int = 1) -> np.ndarray:
        """[n_steps, batch_size / W] global row indices of every step's batch on `rank`."""
        out = [self._span(c, rank, world)[0] + self._perm(c, rank, world)
               for c in range(math.ceil(self.n_steps / self.batches_per_chunk))]
        return np.concatenate(out)[: self.n_steps]

    # ---------------------------------------------------------------- activations
    @torch.no_grad()
    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        """Activations [hi − lo, d] fp32 of global rows [lo, hi), from forward batches aligned as `collect` aligns them."""
        first, last = lo // self.per_seq, (hi - 1) // self.per_seq
        mbs = self.model_batch_size
        emb = self.lm.model.get_input_embeddings()
        parts = []
        for b in range(first // mbs * mbs, last + 1, mbs):
            if isinstance(emb, GaussianEmbedding):
                emb.call_index = b // mbs  # the noise `collect` draws for this batch
            ids = torch.from_numpy(np.asarray(self.tokens[b:b + mbs], dtype=np.int64)).to(self.device)
            a = run_to_hookpoints(self.lm, ids, [self.hookpoint])[self.hookpoint][:, self.drop_first:, :]
            parts.append(a.reshape(-1, a.shape[-1]).float())
        base = first // mbs * mbs * self.per_seq
        x = torch.cat(parts)[lo - base:hi - base]
        if not torch.isfinite(x).all():
            raise ValueError(f"activations at {self.hookpoint} contain NaN/inf (rows {lo:,}–{hi - 1:,} of "
                             f"{self.lm.spec} {self.lm.variant}); refusing to train on them")
        return x

    def batch(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} outside [0, {self.n_steps})")
        chunk = step // self.batches_per_chunk
        if self._chunk is None or self._chunk[0] != (chunk, rank, world):
            lo, hi = self._span(chunk, rank, world)
            self._chunk = ((chunk, rank, world), self._rows(lo, hi), self._perm(chunk, rank, world))
        _, rows, perm = self._chunk
        idx = torch.from_numpy(perm[step % self.batches_per_chunk]).to(rows.device)
        return rows.index_select(0, idx).cpu() if rows.device.type != "cpu" else rows.index_select(0, idx)

    def init_batch(self, rank: int = 0, world: int = 1) -> torch.Tensor:
        """The batch initialisation is drawn from: this rank's first batch (DDP then broadcasts rank 0's SAEs)."""
        return self.batch(0, rank, world)
