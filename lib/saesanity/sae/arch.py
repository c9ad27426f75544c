"""SAE architectures beside TopK (`topk.py`), each with its training loss and SAELens layout.

With x_c = x − b_dec, pre = x_c W_enc + b_enc, s the batch scale (`base.batch_scale`):

- **BatchTopK** (Bussmann et al. 2024): in training, the B·k largest of ReLU(pre) over the whole
  batch are kept; loss = FVU + α·AuxK. At inference, z = pre · 1[pre > θ], θ an exponential moving
  average (decay 0.99) of the smallest kept activation per batch. Saved as SAELens `jumprelu` with
  every threshold θ (SAELens converts BatchTopK the same way).
- **Matryoshka BatchTopK** (Bussmann et al. 2025): BatchTopK's selection; loss = Σ_g FVU of the first m_g
  latents' reconstruction over nested widths m_1 < … < F, + α·AuxK (`MatryoshkaBatchTopKSAE`).
- **ReLU + L1** (SAELens `standard`): z = ReLU(pre); loss = FVU + λ₁·mean_b Σ_f z_bf / s.
- **Gated** (Rajamanoharan et al. 2024, SAELens `gated`): π = x_c W_enc + b_gate,
  z = 1[π > 0] · ReLU(x_c (W_enc ⊙ exp(r_mag)) + b_mag); loss = FVU + λ₁·mean_b Σ ReLU(π)/s
  + FVU(x, ReLU(π) W_dec* + b_dec*) with the decoder (*) frozen in the last term.
- **JumpReLU** (Rajamanoharan et al. 2024b, SAELens `jumprelu`): z = pre · H(pre − θ), θ = exp(log θ)
  per latent; loss = FVU + λ₀·mean_b Σ_f H(pre_bf − θ_f). H's gradient with respect to θ is the
  straight-through estimate −(1/ε)·1[|pre − θ| < ε/2] (DeepMind's: no gradient to pre through H).
  θ starts at, and ε is, `jumprelu_init_threshold` and `jumprelu_bandwidth` times s/√D of the first
  batch (DeepMind's 0.001 on inputs normalised to s = √D).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import SAEBase, StepOut, batch_mean, batch_scale, train_fvu
from .topk import TopKSAE


def _fired(z_BF: torch.Tensor) -> torch.Tensor:
    return (z_BF != 0).any(0)


def _l0(z_BF: torch.Tensor) -> float:
    return float((z_BF != 0).sum(1).float().mean())


class BatchTopKSAE(TopKSAE):
    architecture = "jumprelu"  # its inference form

    def __init__(self, d_in: int, d_sae: int, k: int, *, seed: int | None = None, dtype=torch.float32):
        super().__init__(d_in, d_sae, k, seed=seed, dtype=dtype)
        self.register_buffer("threshold", torch.tensor(float("nan"), dtype=dtype))
        self.widths = (d_sae,)  # the reconstruction levels: one for BatchTopK, the nested ones for Matryoshka

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Inference: z = pre · 1[pre > θ] (θ ≥ 0, so this is also ReLU(pre) · 1[pre > θ])."""
        if torch.isnan(self.threshold):
            raise ValueError("BatchTopK threshold is not set: train the SAE first (or load its jumprelu form)")
        pre = self.pre_acts(x_BD)
        return pre * (pre > self.threshold)

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_BD))

    @torch.no_grad()
    def _track_threshold(self, kept: torch.Tensor) -> None:
        """θ ← the smallest positive kept activation of this batch, averaged (decay 0.99) from the first batch on."""
        kept = kept[kept > 0]
        if kept.numel():
            m = kept.min()
            self.threshold.copy_(m if torch.isnan(self.threshold) else 0.99 * self.threshold + 0.01 * m)

    def training_step(self, x_BD, dead_F, cfg) -> StepOut:
        """The sparse step (TopK's, `topk.py`, with BatchTopK's selection) of BatchTopK (one level) and Matryoshka (its
        nested levels): the dense pre-activations without grad choose the B·k largest positive entries of the batch
        (`select.batch_topk_csr`; a tie at the threshold is kept whole), their values are recomputed exactly (fp32
        under autocast), and each level's reconstruction adds the `embedding_bag` of the selected latents in
        [m_{g-1}, m_g) to the level before it. Loss and gradients are `reconstruction_loss`'s on the same selection
        (tests/test_architectures.py); the cost is one B·D·F product plus B·k·D per sparse pass, not four dense
        B·D·F products (bench/RESULTS.md)."""
        from .select import batch_topk_csr
        from .topk import Selection, _SparseDecode

        B = x_BD.shape[0]
        pre = self._dense_preacts(x_BD)
        with torch.no_grad():
            crow, col, _ = batch_topk_csr(pre, self.k * B)
        sel = Selection.from_csr(crow, col, self.d_sae)
        vals = self.select(x_BD, pre, sel)  # [nnz], ReLU of the exact values
        self._track_threshold(vals.detach())
        rows = sel.rows()
        loss, decoded, prev = 0.0, self.b_dec, 0
        for w in self.widths:
            if (prev, w) == (0, self.d_sae):  # BatchTopK's one level: the whole selection
                part, part_sel = vals, sel
            else:
                band = (col >= prev) & (col < w)
                crow_g = torch.zeros(B + 1, dtype=torch.long, device=col.device)
                crow_g[1:] = torch.bincount(rows[band], minlength=B).cumsum(0)
                part, part_sel = vals[band], Selection.from_csr(crow_g, col[band], self.d_sae)
            decoded = decoded + _SparseDecode.apply(part, self.W_dec, part_sel)
            rec = train_fvu(x_BD, decoded)
            loss, prev = loss + rec, w
        aux = 0.0
        if cfg.auxk_alpha > 0 and dead_F.any():
            aux = self.auxk(x_BD, decoded, pre, dead_F, self.d_in // 2)
        active = (vals > 0).detach()
        fired = torch.bincount(col, weights=active.float(), minlength=self.d_sae) > 0
        return StepOut(loss + cfg.auxk_alpha * aux, rec, float(active.sum()) / B, fired, aux)

    def reconstruction_loss(self, x_BD, z_BF) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss term, FVU of the full reconstruction, x̂) of the dense codes z: the sum of each level's FVU (one level,
        the FVU itself, for BatchTopK). The sparse step's reference (tests/test_architectures.py)."""
        loss, decoded, prev = 0.0, self.b_dec, 0
        for w in self.widths:
            decoded = decoded + z_BF[:, prev:w] @ self.W_dec[prev:w]
            rec = train_fvu(x_BD, decoded)
            loss, prev = loss + rec, w
        return loss, rec, decoded

    def saelens_cfg(self) -> dict:
        return {}

    def saelens_state(self) -> dict:
        st = {n: p.detach().contiguous().float() for n, p in self.named_parameters()}
        st["threshold"] = torch.full((self.d_sae,), float(self.threshold))
        return st


class MatryoshkaBatchTopKSAE(BatchTopKSAE):
    """Matryoshka BatchTopK (Bussmann et al. 2025; Nabeshima 2024): BatchTopK's selection over all F latents, and
    a loss that asks every nested prefix of the dictionary to reconstruct on its own:

        loss = Σ_g FVU(x, z[:, :m_g] W_dec[:m_g] + b_dec) + α·AuxK,   m_1 < … < m_G = F (`widths`),

    so the first m_1 latents form a small SAE, the first m_2 a larger one, and so on. (SAELens' trainer adds
    the same prefixes' summed squared errors; ours are FVUs, scale-free like every loss here.) The logged FVU
    is the full reconstruction's. Inference and saving are BatchTopK's (SAELens `jumprelu`). An inner width
    below the number of features the data holds makes its latents mixtures of them (tests/test_architectures.py:
    planted features' recovery falls from 0.93 to 0.88 at inner widths 8, 24 of 64 latents for 48 features)."""

    def __init__(self, d_in: int, d_sae: int, k: int, *, widths: tuple[int, ...] = (), seed: int | None = None,
                 dtype=torch.float32):
        widths = tuple(int(w) for w in widths)
        if not widths or any(w <= 0 for w in widths) or list(widths) != sorted(set(widths)) or widths[-1] >= d_sae:
            raise ValueError(f"matryoshka widths={list(widths)}: need strictly increasing inner widths in "
                             f"1..{d_sae - 1} (the full width {d_sae} is always the last level)")
        super().__init__(d_in, d_sae, k, seed=seed, dtype=dtype)
        self.widths = widths + (d_sae,)
        self.nested_widths = self.widths  # saved as cfg.json's matryoshka_widths (`sae.io.save_saelens`)


class ReLUSAE(SAEBase):
    architecture = "standard"

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        return F.relu(self.pre_acts(x_BD))

    def training_step(self, x_BD, dead_F, cfg) -> StepOut:
        z = self.encode(x_BD)
        rec = train_fvu(x_BD, self.decode(z))
        l1 = batch_mean(z.sum(1)) / batch_scale(x_BD)
        return StepOut(rec + cfg.l1_coefficient * l1, rec, _l0(z), _fired(z), l1)


class GatedSAE(SAEBase):
    architecture = "gated"

    def __init__(self, d_in: int, d_sae: int, *, seed: int | None = None, dtype=torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        del self.b_enc
        self.b_gate = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.r_mag = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.b_mag = nn.Parameter(torch.zeros(d_sae, dtype=dtype))

    def _gate_mag(self, x_BD):
        x_c = x_BD - self.b_dec
        gate = x_c @ self.W_enc + self.b_gate
        mag = x_c @ (self.W_enc * self.r_mag.exp()) + self.b_mag
        return gate, mag

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        gate, mag = self._gate_mag(x_BD)
        return (gate > 0).to(mag.dtype) * F.relu(mag)

    def training_step(self, x_BD, dead_F, cfg) -> StepOut:
        gate, mag = self._gate_mag(x_BD)
        z = (gate > 0).to(mag.dtype) * F.relu(mag)
        rec = train_fvu(x_BD, self.decode(z))
        g = F.relu(gate)
        l1 = batch_mean(g.sum(1)) / batch_scale(x_BD)
        aux = train_fvu(x_BD, g @ self.W_dec.detach() + self.b_dec.detach())
        return StepOut(rec + cfg.l1_coefficient * l1 + aux, rec, _l0(z), _fired(z), aux)


class _StepSTE(torch.autograd.Function):
    """H(pre − θ) forward; backward gives θ the rectangle-kernel estimate and pre nothing."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        rect = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        return None, (-(1.0 / ctx.eps) * rect * g).sum(0), None


class _JumpSTE(torch.autograd.Function):
    """pre · H(pre − θ) forward; backward: pre gets H·g, θ gets −(θ/ε)·rect·g."""

    @staticmethod
    def forward(ctx, pre, theta, eps):
        ctx.save_for_backward(pre, theta)
        ctx.eps = eps
        return pre * (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        rect = ((pre - theta).abs() < ctx.eps / 2).to(g.dtype)
        return (pre > theta).to(g.dtype) * g, (-(theta / ctx.eps) * rect * g).sum(0), None


class JumpReLUSAE(SAEBase):
    architecture = "jumprelu"

    def __init__(self, d_in: int, d_sae: int, *, seed: int | None = None, dtype=torch.float32):
        super().__init__(d_in, d_sae, seed=seed, dtype=dtype)
        self.log_threshold = nn.Parameter(torch.full((d_sae,), math.log(1e-3), dtype=dtype))
        self.bandwidth = 1e-3

    @property
    def threshold(self) -> torch.Tensor:
        return self.log_threshold.exp()

    def init_from_data(self, x_BD: torch.Tensor, cfg) -> None:
        unit = float(batch_scale(x_BD)) / self.d_in**0.5
        with torch.no_grad():
            self.log_threshold.fill_(math.log(cfg.jumprelu_init_threshold * unit))
        self.bandwidth = cfg.jumprelu_bandwidth * unit

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x_BD)
        return F.relu(pre) * (pre > self.threshold)

    def training_step(self, x_BD, dead_F, cfg) -> StepOut:
        pre = self.pre_acts(x_BD)
        theta = self.threshold
        z = _JumpSTE.apply(F.relu(pre), theta, self.bandwidth)
        rec = train_fvu(x_BD, self.decode(z))
        l0 = batch_mean(_StepSTE.apply(pre, theta, self.bandwidth).sum(1))
        return StepOut(rec + cfg.l0_coefficient * l0, rec, _l0(z), _fired(z), l0)

    def saelens_state(self) -> dict:
        st = {n: p.detach().contiguous().float() for n, p in self.named_parameters() if n != "log_threshold"}
        st["threshold"] = self.threshold.detach().float()
        return st

    @classmethod
    def _state_from_saelens(cls, cfg: dict, state: dict) -> dict:
        st = {k: v for k, v in state.items() if k != "threshold"}
        st["log_threshold"] = state["threshold"].clamp_min(1e-12).log()
        return st


ARCHITECTURES = {"topk": TopKSAE, "batchtopk": BatchTopKSAE, "relu": ReLUSAE, "gated": GatedSAE,
                 "jumprelu": JumpReLUSAE, "matryoshka": MatryoshkaBatchTopKSAE}
# SAELens architecture name -> our class (BatchTopK reloads as the JumpReLU it is saved as)
FROM_SAELENS = {"topk": TopKSAE, "standard": ReLUSAE, "gated": GatedSAE, "jumprelu": JumpReLUSAE}
