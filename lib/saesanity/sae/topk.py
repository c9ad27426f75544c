"""TopK sparse autoencoder (Gao et al. 2024; Paulo & Belrose 2025 eq. 1).

    z   = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc))      latents [B, F]
    x̂   = z @ W_dec + b_dec                               reconstruction [B, D]

Parameters use the SAELens layout: `W_enc` [D, F], `b_enc` [F], `W_dec` [F, D] (rows unit-norm),
`b_dec` [D]. Shapes: B batch, D d_in, F d_sae, K k.

Training uses a sparse path: the dense pre-activations are computed once without autograd, TopK
picks K latents per token (a `Selection`, sorted by latent within each row), and custom autograd
functions touch only those B·K entries:

- the K are each row's largest pre-activations, ties to the lower latent index (`select.topk_indices`: a
  C++ kernel on the CPU, 3.4x `torch.topk`, and one rule on every device);
- the K values are gathered from the pre-activations (or, under bf16 autocast, recomputed exactly in
  fp32 as the sampled product (x − b_dec)·W_enc at the selection, `torch.sparse.sampled_addmm`);
- the decoder is an `embedding_bag` over the K (latent, value) pairs;
- ∂vals = (∂x̂ · W_decᵀ) at the selection (sampled product again, B·K·D), and ∂W_dec, ∂W_enc are
  per-latent bags of the gradient and of x − b_dec (B·K·D each), sharing one sort of the selection
  by latent; W_enc is stored column-major so ∂W_enc lands in its layout without a transposed copy.

So the encoder backward costs B·K·D instead of B·F·D multiply-adds; `tests/test_sae.py` checks the
gradients against dense autograd. The one B·D·F product is the encoder's; top-k over [B, F] is the
other per-token cost that grows with F (bench/RESULTS.md counts the step).

Under `torch.autocast` (bf16 training, `train.TrainConfig.autocast`) the encoder product and the
top-k run in bf16 (so the choice of latents sees bf16-rounded products), the K selected values are
exact fp32, the decoder forward and ∂vals are fp32, and the two per-latent bags of the backward run
in bf16 (returned as fp32 gradients); AuxK's dense dead-latent products are bf16 matmuls. The
backwards follow the forward's precision whether or not `backward()` is called inside the autocast
block. Parameters, gradients and Adam state are fp32. `tests/test_autocast.py` checks bf16 training
lands close to fp32 training.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import SAEBase, StepOut, train_fvu
from .select import topk_indices


def _exact(t: torch.Tensor):
    """Autocast off on `t`'s device for the block: the sparse kernels compute in their inputs' dtype."""
    if not torch.is_autocast_enabled(t.device.type):
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)


def _compute_dtype(t: torch.Tensor, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype the dense encoder product runs in: autocast's where it is on, else the parameters'."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return param_dtype


class Selection:
    """The latents chosen for each of B tokens, sorted by latent within each row: K per row (`idx` [B, K], TopK's) or
    any number per row (`from_csr`: BatchTopK's row pointers `crow` [B + 1] and columns `col` [nnz]), with the index
    structures the sparse kernels share, each built once per step on first use:

    - `pattern`: the [B, F] CSR pattern of the selection, for `sampled` (`torch.sparse.sampled_addmm`);
    - `by_latent`: the (token, slot) pairs regrouped by latent, for `per_latent_sum` (`F.embedding_bag`).

    Values over the selection have the selection's `shape`: [B, K], or [nnz] for a CSR one.
    Sorting makes each row's order (and so every sum over it) independent of the order `topk` returns.
    """

    def __init__(self, idx_BK: torch.Tensor, n_lat: int, *, ascending: bool = False):
        self.idx = idx_BK if ascending else idx_BK.sort(dim=1).values  # ascending: already sorted by latent
        self.n_lat = n_lat
        self.shape, self._K = self.idx.shape, self.idx.shape[1]
        self.col, self._crow, self._rows = self.idx.reshape(-1), None, None
        self._pattern = self._by_latent = None

    @classmethod
    def from_csr(cls, crow: torch.Tensor, col: torch.Tensor, n_lat: int) -> "Selection":
        """A selection of any number of latents per row, columns ascending within each row."""
        sel = cls.__new__(cls)
        sel.idx, sel.n_lat, sel.shape, sel.col, sel._crow, sel._K = None, n_lat, col.shape, col, crow, None
        sel._rows = sel._pattern = sel._by_latent = None
        return sel

    @property
    def crow(self) -> torch.Tensor:
        if self._crow is None:
            B = self.idx.shape[0]
            self._crow = torch.arange(0, B * self._K + 1, self._K, device=self.idx.device)
        return self._crow

    def rows(self) -> torch.Tensor:
        """The token (row) of each selected entry, in the selection's flat order [nnz]."""
        if self._rows is None:
            B = self.crow.numel() - 1
            ar = torch.arange(B, device=self.col.device)
            self._rows = ar.repeat_interleave(self._K) if self._K is not None else ar.repeat_interleave(self.crow.diff())
        return self._rows

    def bag(self, weight: torch.Tensor, per_sample: torch.Tensor) -> torch.Tensor:
        """out[b] = Σ_{selected (b, j)} per_sample[b, j] · weight[j]  [B, D] (`F.embedding_bag`)."""
        if self.idx is not None:
            return F.embedding_bag(self.idx, weight, per_sample_weights=per_sample, mode="sum")
        return F.embedding_bag(self.col, weight, self.crow[:-1], per_sample_weights=per_sample, mode="sum")

    def pattern(self) -> torch.Tensor:
        if self._pattern is None:
            B = self.crow.numel() - 1
            with warnings.catch_warnings():  # "sparse CSR support is in beta": a one-time notice, not ours to print
                warnings.simplefilter("ignore", UserWarning)
                self._pattern = torch.sparse_csr_tensor(self.crow, self.col, torch.zeros(self.col.numel(), device=self.col.device),
                                                        size=(B, self.n_lat), check_invariants=False)
        return self._pattern

    def by_latent(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(order into the flat selection, token of each, bag offsets [F]): the pairs of latent f are order[offsets[f]:…]."""
        if self._by_latent is None:
            flat = self.col
            order = torch.argsort(flat, stable=True)
            offsets = torch.zeros(self.n_lat, dtype=torch.long, device=flat.device)
            offsets[1:] = torch.bincount(flat, minlength=self.n_lat).cumsum(0)[:-1]
            rows = self.rows()[order]
            self._by_latent = order, rows, offsets
        return self._by_latent

    def sampled(self, a_BD: torch.Tensor, b_DF: torch.Tensor) -> torch.Tensor:
        """out[b, j] = <a[b], b[:, idx[b, j]]>  (the selection's shape): the selected entries of a @ b, one
        multiply-add per (entry, d) (`torch.sparse.sampled_addmm`; fastest when b's columns are contiguous, as
        W_enc's and W_decᵀ are)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = torch.sparse.sampled_addmm(self.pattern().to(a_BD.dtype), a_BD, b_DF, beta=0.0)
        return out.values().view(self.shape)

    def per_latent_sum(self, src_BD: torch.Tensor, w_BK: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """out[f] = Σ_{(b,j): idx[b,j]=f} w[b,j] · src[b]   -> [F, D] (a sparse Gᵀ @ src, one bag per latent),
        computed in `dtype` (bf16 under autocast: 4x faster here) and returned in src's dtype."""
        order, rows, offsets = self.by_latent()
        dt = dtype or src_BD.dtype
        out = F.embedding_bag(rows, src_BD.to(dt), offsets, per_sample_weights=w_BK.reshape(-1)[order].to(dt), mode="sum")
        return out.to(src_BD.dtype)


class _GatherPreacts(torch.autograd.Function):
    """out[b, j] = pre[b, idx[b, j]] with pre = (x − b_dec) @ W_enc + b_enc, exact in the parameters' dtype.

    `pre` (no grad) chose the selection; where it is in a lower precision (bf16 autocast) the K values are
    recomputed from x and W_enc in fp32 (`Selection.sampled`, B·K·D), so only the choice of latents sees the
    rounding. b_dec's gradient is −W_enc @ grad_b_enc (the sum over tokens of the gradient w.r.t. x − b_dec),
    so the [B, D] input gradient is built only when x itself requires grad (never in training). ∂W_enc is
    built latent by latent ([F, D]) and handed back transposed: TopKSAE stores W_enc column-major, so it is
    the parameter's own layout and no transposed copy is made.
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, pre, sel):
        xc = x - b_dec
        ctx.sel, ctx.low = sel, _compute_dtype(x, W_enc.dtype)  # the backward's bags run in the forward's dtype
        ctx.save_for_backward(xc, W_enc)
        if pre.dtype == W_enc.dtype:
            return pre.gather(1, sel.idx) if sel.idx is not None else pre[sel.rows(), sel.col]
        with _exact(xc):
            return sel.sampled(xc, W_enc) + (b_enc[sel.idx] if sel.idx is not None else b_enc[sel.col])

    @staticmethod
    def backward(ctx, g):  # g: [B, K]
        xc, W_enc = ctx.saved_tensors
        sel = ctx.sel
        low = ctx.low
        g = g.to(W_enc.dtype)
        grad_x = grad_bd = grad_W = None
        with _exact(g):
            grad_b = torch.zeros(sel.n_lat, dtype=g.dtype, device=g.device).index_add_(0, sel.col, g.reshape(-1))
            if ctx.needs_input_grad[0]:  # grad_x[b] = Σ_j g[b,j] · W_enc[:, idx[b,j]]
                grad_x = sel.bag(W_enc.t().contiguous(), g)
            if ctx.needs_input_grad[1]:
                grad_bd = -(W_enc @ grad_b)
            if ctx.needs_input_grad[2]:
                grad_W = sel.per_latent_sum(xc, g, low).t()
        return grad_x, grad_bd, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """out[b] = Σ_j vals[b, j] · W_dec[idx[b, j]]  [B, D], with a backward that costs B·K·D."""

    @staticmethod
    def forward(ctx, vals, W_dec, sel):
        vals = vals.to(W_dec.dtype)  # embedding_bag needs weights and per-sample weights of one dtype
        ctx.sel, ctx.low = sel, _compute_dtype(vals, W_dec.dtype)
        ctx.save_for_backward(vals, W_dec)
        with _exact(vals):
            return sel.bag(W_dec, vals)

    @staticmethod
    def backward(ctx, g):  # g: [B, D]
        vals, W_dec = ctx.saved_tensors
        sel = ctx.sel
        low = ctx.low
        g = g.to(W_dec.dtype)
        with _exact(g):
            grad_vals = sel.sampled(g, W_dec.t()) if ctx.needs_input_grad[0] else None
            grad_W = sel.per_latent_sum(g, vals, low) if ctx.needs_input_grad[1] else None
        return grad_vals, grad_W, None


_WORK: OrderedDict = OrderedDict()
_WORK_SHAPES = 4  # buffers kept: a family of several sizes (Fig. 5's, Leask's) steps through one shape each


def _workspace(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A [B, F] buffer for the training step's dense pre-activations, reused from step to step (and shared by
    the members of a family of one shape, which step one after another): a fresh 20-80 MB tensor each step costs
    a page fault per 4 KB page on first touch, several ms a step on our virtual machines. One buffer per shape,
    the `_WORK_SHAPES` most recently used."""
    key = (tuple(shape), dtype, torch.device(device))
    if key in _WORK:
        _WORK.move_to_end(key)
        return _WORK[key]
    while len(_WORK) >= _WORK_SHAPES:
        _WORK.popitem(last=False)
    buf = _WORK[key] = torch.empty(shape, dtype=dtype, device=device)
    return buf


class TopKSAE(SAEBase):
    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, k: int, *, seed: int | None = None, dtype=torch.float32):
        if not 0 < k < d_sae:
            raise ValueError(f"k={k} must satisfy 0 < k < d_sae={d_sae}")
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        # W_enc [D, F] stored column-major (each latent's encoder vector contiguous): the sparse kernels read
        # columns, and ∂W_enc, built latent by latent, lands in the parameter's layout without a transposed copy
        self.W_enc = nn.Parameter(self.W_enc.detach().t().contiguous().t())
        self.k = k

    def _dense_preacts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Pre-activations [B, F] in the compute dtype, without grad, in the step's reused workspace. Under autocast
        the product (and so the choice of latents) is in bf16; `_GatherPreacts` recomputes the chosen values exactly."""
        dtype = _compute_dtype(x_BD, self.W_enc.dtype)
        with torch.no_grad(), _exact(x_BD):
            pre = _workspace((x_BD.shape[0], self.d_sae), dtype, x_BD.device)
            return torch.mm((x_BD - self.b_dec).to(dtype), self.W_enc.to(dtype), out=pre).add_(self.b_enc.to(dtype))

    def _train_preacts(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(`_dense_preacts`, the k largest of each row [B, K])."""
        pre = self._dense_preacts(x_BD)
        with torch.no_grad():
            return pre, topk_indices(pre, self.k)

    def encode_sparse(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, Selection, torch.Tensor]:
        """(values [B, K] after ReLU, their `Selection`, dense pre-activations [B, F] without grad)."""
        pre, idx = self._train_preacts(x_BD)
        sel = Selection(idx, self.d_sae, ascending=True)
        return self.select(x_BD, pre, sel), sel, pre

    def select(self, x_BD: torch.Tensor, pre_BF: torch.Tensor, sel: Selection) -> torch.Tensor:
        """ReLU of the pre-activations at `sel` [B, K], differentiable with a sparse backward."""
        return F.relu(_GatherPreacts.apply(x_BD, self.b_dec, self.W_enc, self.b_enc, pre_BF, sel))

    def decode_sparse(self, vals_BK: torch.Tensor, sel: Selection, with_bias: bool = True) -> torch.Tensor:
        out = _SparseDecode.apply(vals_BK, self.W_dec, sel)
        return out + self.b_dec if with_bias else out

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense latents [B, F]: ReLU of the top-k pre-activations, zeros elsewhere."""
        pre = self.pre_acts(x_BD)
        with torch.no_grad():
            idx = topk_indices(pre.detach(), self.k)
        return torch.zeros_like(pre).scatter_(1, idx, F.relu(pre.gather(1, idx)))

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        vals, sel, _ = self.encode_sparse(x_BD)
        return self.decode_sparse(vals, sel)

    def auxk(self, x_BD, x_hat_BD, pre_BF, dead_F, k_aux: int) -> torch.Tensor:
        """AuxK loss: FVU of the residual x − x̂ reconstructed by the `k_aux` most active dead latents.

        Cost: with G dead latents (G ≤ F/2, the usual case), only their G columns are encoded and
        decoded, densely: ~6·B·D·G multiply-adds forward and backward, instead of a top-k over all F
        pre-activations and B·k_aux gathers and scatters per step (k_aux = D/2 is large).
        """
        dead_idx = torch.nonzero(dead_F).squeeze(1)
        n_aux = min(k_aux, dead_idx.numel())
        resid = (x_BD - x_hat_BD).detach()
        if dead_idx.numel() > self.d_sae // 2:
            with torch.no_grad():
                aux_idx = pre_BF.masked_fill(~dead_F, -torch.inf).topk(n_aux, dim=1, sorted=False).indices
            sel = Selection(aux_idx, self.d_sae)
            return train_fvu(resid, self.decode_sparse(self.select(x_BD, pre_BF, sel), sel, with_bias=False))
        with torch.no_grad():
            keep = torch.zeros(x_BD.shape[0], dead_idx.numel(), dtype=torch.bool, device=x_BD.device)
            keep.scatter_(1, pre_BF[:, dead_idx].topk(n_aux, dim=1, sorted=False).indices, True)
        pre_dead = (x_BD - self.b_dec) @ self.W_enc[:, dead_idx] + self.b_enc[dead_idx]  # [B, G]
        z_dead = F.relu(pre_dead) * keep
        return train_fvu(resid, z_dead @ self.W_dec[dead_idx])

    def training_step(self, x_BD: torch.Tensor, dead_F: torch.Tensor, cfg) -> StepOut:
        vals, sel, pre = self.encode_sparse(x_BD)
        x_hat = self.decode_sparse(vals, sel)
        rec = train_fvu(x_BD, x_hat)
        aux = self.auxk(x_BD, x_hat, pre, dead_F, self.d_in // 2) if cfg.auxk_alpha > 0 and dead_F.any() else 0.0
        active = (vals > 0).detach()
        fired = torch.bincount(sel.idx.reshape(-1), weights=active.reshape(-1).float(), minlength=self.d_sae) > 0
        return StepOut(rec + cfg.auxk_alpha * aux, rec, float(active.sum()) / x_BD.shape[0], fired, aux)

    def saelens_cfg(self) -> dict:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}

    @classmethod
    def _ctor_kwargs(cls, cfg: dict) -> dict:
        return {"k": int(cfg["k"])}

