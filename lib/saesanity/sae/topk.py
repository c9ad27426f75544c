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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
    """out[b, j] = <g[b], W[idx[b, j]]>  [B, K], gathered in chunks to bound memory at chunk·K·D."""
    out = torch.empty(idx_BK.shape, dtype=g_BD.dtype, device=g_BD.device)
    for s in range(0, idx_BK.shape[0], chunk):
        rows = F.embedding(idx_BK[s:s + chunk], W_FD)  # [c, K, D]
        out[s:s + chunk] = torch.bmm(rows, g_BD[s:s + chunk, :, None]).squeeze(-1)
    return out


class _GatherPreacts(torch.autograd.Function):
    """out[b, j] = pre[b, idx[b, j]] with pre = x_c @ W_enc + b_enc, given `pre` precomputed."""

    @staticmethod
    def forward(ctx, x_c, W_enc, b_enc, pre, idx):
        ctx.save_for_backward(x_c, W_enc, idx)
        return pre.gather(1, idx)

    @staticmethod
    def backward(ctx, g):  # g: [B, K]
        x_c, W_enc, idx = ctx.saved_tensors
        n_lat = W_enc.shape[1]
        grad_x = grad_W = None
        if ctx.needs_input_grad[0]:  # grad_x[b] = Σ_j g[b,j] · W_enc[:, idx[b,j]]
            grad_x = F.embedding_bag(idx, W_enc.t().contiguous(), per_sample_weights=g, mode="sum")
        if ctx.needs_input_grad[1]:
            grad_W = _per_latent_sum(x_c, g, idx, n_lat).t().contiguous()
        grad_b = torch.zeros(n_lat, dtype=g.dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        return grad_x, grad_W, grad_b, None, None


class _SparseDecode(torch.autograd.Function):
    """out[b] = Σ_j vals[b, j] · W_dec[idx[b, j]]  [B, D], with a backward that costs B·K·D."""

    @staticmethod
    def forward(ctx, vals, W_dec, idx):
        ctx.save_for_backward(vals, W_dec, idx)
        return F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, g):  # g: [B, D]
        vals, W_dec, idx = ctx.saved_tensors
        grad_vals = _rowwise_dot(g, W_dec, idx) if ctx.needs_input_grad[0] else None
        grad_W = _per_latent_sum(g, vals, idx, W_dec.shape[0]) if ctx.needs_input_grad[1] else None
        return grad_vals, grad_W, None


class TopKSAE(nn.Module):
    def __init__(self, d_in: int, d_sae: int, k: int, *, seed: int | None = None, dtype=torch.float32):
        super().__init__()
        if not 0 < k < d_sae:
            raise ValueError(f"k={k} must satisfy 0 < k < d_sae={d_sae}")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # sparsify's initialisation: encoder ~ U(±1/sqrt(D)), decoder = unit-normalised encoder.T
        bound = 1.0 / d_in**0.5
        W_enc = (torch.rand(d_in, d_sae, generator=gen, dtype=dtype) * 2 - 1) * bound
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(W_enc.t().contiguous())  # row-major: the sparse kernels gather rows
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.normalize_decoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each decoder row (keeps rows unit-norm to first order)."""
        if self.W_dec.grad is not None:
            g = self.W_dec.grad
            g.sub_((g * self.W_dec).sum(1, keepdim=True) * self.W_dec)

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense pre-activations [B, F] = (x - b_dec) @ W_enc + b_enc."""
        return (x_BD - self.b_dec) @ self.W_enc + self.b_enc

    def encode_sparse(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(values [B, K] after ReLU, indices [B, K], dense pre-activations [B, F] without grad)."""
        with torch.no_grad():
            pre = self.pre_acts(x_BD)
            idx = pre.topk(self.k, dim=1, sorted=False).indices
        return self.select(x_BD, pre, idx), idx, pre

    def select(self, x_BD: torch.Tensor, pre_BF: torch.Tensor, idx_BK: torch.Tensor) -> torch.Tensor:
        """ReLU of the pre-activations at `idx` [B, K], differentiable with a sparse backward."""
        return F.relu(_GatherPreacts.apply(x_BD - self.b_dec, self.W_enc, self.b_enc, pre_BF, idx_BK))

    def decode_sparse(self, vals_BK: torch.Tensor, idx_BK: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        out = _SparseDecode.apply(vals_BK, self.W_dec, idx_BK)
        return out + self.b_dec if with_bias else out

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense latents [B, F]: ReLU of the top-k pre-activations, zeros elsewhere."""
        pre = self.pre_acts(x_BD)
        top = pre.topk(self.k, dim=1, sorted=False)
        return torch.zeros_like(pre).scatter_(1, top.indices, F.relu(top.values))

    def decode(self, z_BF: torch.Tensor) -> torch.Tensor:
        return z_BF @ self.W_dec + self.b_dec

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        vals, idx, _ = self.encode_sparse(x_BD)
        return self.decode_sparse(vals, idx)
