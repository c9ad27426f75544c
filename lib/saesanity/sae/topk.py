"""TopK sparse autoencoder (Gao et al. 2024; Paulo & Belrose 2025 eq. 1).

    z   = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc))      latents [B, F]
    x̂   = z @ W_dec + b_dec                               reconstruction [B, D]

Parameters use the SAELens layout: `W_enc` [D, F], `b_enc` [F], `W_dec` [F, D] (rows unit-norm),
`b_dec` [D]. Shapes: B batch, D d_in, F d_sae, K k.

Training uses a sparse path: the dense pre-activations are computed once without autograd, TopK
picks K indices per row, and a custom autograd function returns the K selected pre-activations
with a backward that touches only those K entries per row (sparse @ dense products), so the
encoder backward costs B·K·D instead of B·F·D multiply-adds. The decoder is an `embedding_bag`
over the K (index, value) pairs. `tests/test_sae.py` checks the gradients against dense autograd.

Under `torch.autocast` (bf16 training, `train.TrainConfig.autocast`) the dense pre-activations come
from a bf16 matmul (fp32 accumulation; + b_enc makes them fp32 again), so the top-k is chosen on
bf16-rounded products, and AuxK's dense dead-latent products are bf16 matmuls too; everything
sparse stays in the parameters' dtype (fp32) explicitly: the gathered values and the `embedding_bag`
decoder take fp32 inputs, and both custom backwards run in fp32 with autocast off (`_exact`) even if
`backward()` is called inside an autocast block. `tests/test_autocast.py` checks bf16 training
lands close to fp32 training.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from .base import SAEBase, StepOut, train_fvu


def _exact(t: torch.Tensor):
    """Autocast off on `t`'s device for the block: the sparse kernels compute in their inputs' dtype."""
    if not torch.is_autocast_enabled(t.device.type):
        return contextlib.nullcontext()
    return torch.autocast(t.device.type, enabled=False)


def _bags_by_latent(idx_BK: torch.Tensor, n_lat: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Regroup the (row, slot) pairs of idx by latent: (order into idx.flat, row of each, bag offsets [F])."""
    B, K = idx_BK.shape
    flat = idx_BK.reshape(-1)
    order = torch.argsort(flat, stable=True)
    offsets = torch.zeros(n_lat, dtype=torch.long, device=idx_BK.device)
    offsets[1:] = torch.bincount(flat, minlength=n_lat).cumsum(0)[:-1]
    rows = torch.arange(B, device=idx_BK.device).repeat_interleave(K)[order]
    return order, rows, offsets


def _per_latent_sum(src_BD: torch.Tensor, w_BK: torch.Tensor, idx_BK: torch.Tensor, n_lat: int) -> torch.Tensor:
    """out[f] = Σ_{(b,j): idx[b,j]=f} w[b,j] · src[b]   -> [F, D] (a sparse Gᵀ @ src, one bag per latent)."""
    order, rows, offsets = _bags_by_latent(idx_BK, n_lat)
    return F.embedding_bag(rows, src_BD, offsets, per_sample_weights=w_BK.reshape(-1)[order], mode="sum")


def _rowwise_dot(g_BD: torch.Tensor, W_FD: torch.Tensor, idx_BK: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """out[b, j] = <g[b], W[idx[b, j]]>  [B, K].

    Two ways, chosen by cost: gathering the K rows per token moves B·K·D floats through memory
    (`F.embedding` + `bmm`, chunked to bound memory at chunk·K·D); the dense product g @ Wᵀ then a
    gather costs B·D·F multiply-adds at matmul speed. Measured on 2 CPU cores (B=1024, D=576,
    F=4608) the gather takes 4.7 / 19 / 55 / 114 ms at K = 16 / 32 / 64 / 128 and the dense product
    17 ms whatever K; in a whole training step (bench/bench_topk_step.py) the gather still wins at
    K = 32, so the dense way is used once F ≤ 100·K (AuxK's K = D/2 always takes it).
    """
    if W_FD.shape[0] <= 100 * idx_BK.shape[1]:
        return (g_BD @ W_FD.t()).gather(1, idx_BK)
    out = torch.empty(idx_BK.shape, dtype=g_BD.dtype, device=g_BD.device)
    for s in range(0, idx_BK.shape[0], chunk):
        rows = F.embedding(idx_BK[s:s + chunk], W_FD)  # [c, K, D]
        out[s:s + chunk] = torch.bmm(rows, g_BD[s:s + chunk, :, None]).squeeze(-1)
    return out


class _GatherPreacts(torch.autograd.Function):
    """out[b, j] = pre[b, idx[b, j]] with pre = (x − b_dec) @ W_enc + b_enc, given `pre` precomputed.

    b_dec's gradient is −W_enc @ grad_b_enc (the sum over tokens of the gradient w.r.t. x − b_dec),
    so the [B, D] input gradient — and the transposed copy of W_enc it needs — is built only when x
    itself requires grad (never in training).
    """

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, pre, idx):
        ctx.save_for_backward(x, b_dec, W_enc, idx)
        return pre.gather(1, idx).to(W_enc.dtype)  # fp32 values even from a lower-precision `pre`

    @staticmethod
    def backward(ctx, g):  # g: [B, K]
        x, b_dec, W_enc, idx = ctx.saved_tensors
        g = g.to(W_enc.dtype)
        n_lat = W_enc.shape[1]
        grad_x = grad_bd = grad_W = None
        with _exact(g):
            grad_b = torch.zeros(n_lat, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
            if ctx.needs_input_grad[0]:  # grad_x[b] = Σ_j g[b,j] · W_enc[:, idx[b,j]]
                grad_x = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g, mode="sum")
            if ctx.needs_input_grad[1]:
                grad_bd = -(W_enc @ grad_b)
            if ctx.needs_input_grad[2]:
                grad_W = _per_latent_sum(x - b_dec, g, idx, n_lat).t().contiguous()
        return grad_x, grad_bd, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """out[b] = Σ_j vals[b, j] · W_dec[idx[b, j]]  [B, D], with a backward that costs B·K·D."""

    @staticmethod
    def forward(ctx, vals, W_dec, idx):
        vals = vals.to(W_dec.dtype)  # embedding_bag needs weights and per-sample weights of one dtype
        ctx.save_for_backward(vals, W_dec, idx)
        with _exact(vals):
            return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, g):  # g: [B, D]
        vals, W_dec, idx = ctx.saved_tensors
        g = g.to(W_dec.dtype)
        with _exact(g):
            grad_vals = _rowwise_dot(g, W_dec, idx) if ctx.needs_input_grad[0] else None
            grad_W = _per_latent_sum(g, vals, idx, W_dec.shape[0]) if ctx.needs_input_grad[1] else None
        return grad_vals, grad_W, None


class TopKSAE(SAEBase):
    architecture = "topk"

    def __init__(self, d_in: int, d_sae: int, k: int, *, seed: int | None = None, dtype=torch.float32):
        if not 0 < k < d_sae:
            raise ValueError(f"k={k} must satisfy 0 < k < d_sae={d_sae}")
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        self.k = k

    def encode_sparse(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values [B, K] after ReLU, indices [B, K], dense pre-activations [B, F] without grad)."""
        with torch.no_grad():
            pre = self.pre_acts(x_BD)
            idx = pre.topk(self.k, dim=1, sorted=False).indices
        return self.select(x_BD, pre, idx), idx, pre

    def select(self, x_BD: torch.Tensor, pre_BF: torch.Tensor, idx_BK: torch.Tensor) -> torch.Tensor:
        """ReLU of the pre-activations at `idx` [B, K], differentiable with a sparse backward."""
        return F.relu(_GatherPreacts.apply(x_BD, self.b_dec, self.W_enc, self.b_enc, pre_BF, idx_BK))

    def decode_sparse(self, vals_BK: torch.Tensor, idx_BK: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        out = _SparseDecode.apply(vals_BK, self.W_dec, idx_BK)
        return out + self.b_dec if with_bias else out

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense latents [B, F]: ReLU of the top-k pre-activations, zeros elsewhere."""
        pre = self.pre_acts(x_BD)
        top = pre.topk(self.k, dim=1, sorted=False)
        return torch.zeros_like(pre).scatter_(1, top.indices, F.relu(top.values))

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        vals, idx, _ = self.encode_sparse(x_BD)
        return self.decode_sparse(vals, idx)

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
            return train_fvu(resid, self.decode_sparse(self.select(x_BD, pre_BF, aux_idx), aux_idx, with_bias=False))
        with torch.no_grad():
            keep = torch.zeros(x_BD.shape[0], dead_idx.numel(), dtype=torch.bool, device=x_BD.device)
            keep.scatter_(1, pre_BF[:, dead_idx].topk(n_aux, dim=1, sorted=False).indices, True)
        pre_dead = (x_BD - self.b_dec) @ self.W_enc[:, dead_idx] + self.b_enc[dead_idx]  # [B, G]
        z_dead = F.relu(pre_dead) * keep
        return train_fvu(resid, z_dead @ self.W_dec[dead_idx])

    def training_step(self, x_BD: torch.Tensor, dead_F: torch.Tensor, cfg) -> StepOut:
        vals, idx, pre = self.encode_sparse(x_BD)
        x_hat = self.decode_sparse(vals, idx)
        rec = train_fvu(x_BD, x_hat)
        aux = self.auxk(x_BD, x_hat, pre, dead_F, self.d_in // 2) if cfg.auxk_alpha > 0 and dead_F.any() else 0.0
        fired = torch.zeros(self.d_sae, dtype=torch.bool, device=x_BD.device)
        fired[idx[vals > 0]] = True
        return StepOut(rec + cfg.auxk_alpha * aux, rec, float((vals > 0).sum(1).float().mean()), fired, aux)

    def saelens_cfg(self) -> dict:
        return {"k": self.k, "rescale_acts_by_decoder_norm": False}

    @classmethod
    def _ctor_kwargs(cls, cfg: dict) -> dict:
        return {"k": int(cfg["k"])}

