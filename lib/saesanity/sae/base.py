"""What every SAE architecture shares: parameters in the SAELens layout, initialisation, the
unit-norm decoder constraint, decoding, and the per-step training output.

Shapes: B batch, D d_in, F d_sae. `W_enc` [D, F], `b_enc` [F], `W_dec` [F, D], `b_dec` [D].
Every architecture keeps decoder rows at unit norm (renormalised after each step, the gradient
component parallel to each row removed before it), subtracts `b_dec` before encoding, and is
initialised the same way for a seed: encoder ~ U(±1/√D), decoder = unit-normalised encoderᵀ.

Sparsity penalties are made scale-free with s = √(mean_b ‖x_b − x̄‖²), the batch's RMS distance
from its mean: an L1 penalty is λ·mean_b Σ_f |z_bf| / s, so λ means the same on activations of
any norm (and the reconstruction term is the FVU, also scale-free).

Under data parallelism (`sharded(world)`, set by the training loop around a DDP step) each rank sees
a slice of the batch, and the batch statistics in the losses are taken over the *global* batch:
`train_fvu` divides the rank's squared error by the global centred variance, `batch_mean` divides a
rank's sum by the global token count, and `batch_scale` is the global s. Each rank's loss is then
its share of the global loss (the shares sum to it). Outside `sharded` they are exactly
`metrics.fvu`, `Tensor.mean` and the local s.

**Input transform.** An SAE trained on activations that were transformed before it saw them (SAELens's
GPT-2 releases: TransformerLens's `center_writing_weights`, under which every activation we collect is
centred per token) carries the name of that transform in `input_transform` (`INPUT_TRANSFORMS`), and
`transform_input(x)` applies it. Where the transform is linear, the loader folds it into the encoder
(`fold_centering`), so `encode(x)` of a raw activation is already the released SAE's code of the
transformed one; the decoder reconstructs the *transformed* activation, so MSE, FVU and every other
reconstruction measure compare `decode(encode(x))` with `transform_input(x)`, never with x.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ..metrics import fvu

_WORLD: int | None = None  # world size while a data-parallel step runs (see `sharded`)


@dataclass
class StepOut:
    """One training step's outputs: `loss` to minimise, and what the loop logs and tracks."""

    loss: torch.Tensor
    fvu: torch.Tensor  # reconstruction FVU of this batch
    l0: float  # mean active latents per token
    fired: torch.Tensor  # [F] bool: latents active on some token of the batch
    aux: torch.Tensor | float = 0.0  # auxiliary loss term (AuxK, gated aux, sparsity), for the log


@contextlib.contextmanager
def sharded(world: int):
    """Within the block, batch statistics in training losses are global over `world` ranks."""
    global _WORLD
    prev, _WORLD = _WORLD, world
    try:
        yield
    finally:
        _WORLD = prev


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(t)
    return t


@torch.no_grad()
def _global_centred(x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_b ‖x_b − x̄‖², number of rows) over the global batch, x̄ its mean (two all-reduces)."""
    head = _all_sum(torch.cat([x_BD.sum(0), x_BD.new_tensor([x_BD.shape[0]])]))
    n = head[-1]
    total = _all_sum((x_BD - head[:-1] / n).pow(2).sum().reshape(1))[0]
    return total, n


def _reduced(t: torch.Tensor) -> torch.Tensor:
    """`t` in fp32 if it is in a lower precision (a bf16 matmul output under autocast): losses reduce in fp32."""
    return t.float() if t.is_floating_point() and torch.finfo(t.dtype).bits < 32 else t


def train_fvu(x_BD: torch.Tensor, x_hat_BD: torch.Tensor) -> torch.Tensor:
    """`metrics.fvu` of a training batch; under `sharded`, this rank's Σ‖x − x̂‖² over the global centred variance.
    Computed in (at least) fp32 whatever the inputs' precision."""
    x_BD, x_hat_BD = _reduced(x_BD), _reduced(x_hat_BD)
    if _WORLD is None:
        return fvu(x_BD, x_hat_BD)
    total, _ = _global_centred(x_BD)
    return (x_BD - x_hat_BD).pow(2).sum() / total.clamp_min(torch.finfo(total.dtype).tiny)


def batch_mean(t_B: torch.Tensor) -> torch.Tensor:
    """Mean over the batch's tokens (in at least fp32); under `sharded`, this rank's sum over the global token count."""
    t_B = _reduced(t_B)
    if _WORLD is None:
        return t_B.mean()
    with torch.no_grad():
        n = _all_sum(t_B.new_tensor([t_B.shape[0]]))[0]
    return t_B.sum() / n


def batch_scale(x_BD: torch.Tensor) -> torch.Tensor:
    """s = √(mean_b ‖x_b − x̄‖²)  (a scalar, no gradient, in at least fp32; over the global batch under `sharded`)."""
    x_BD = _reduced(x_BD)
    if _WORLD is not None:
        total, n = _global_centred(x_BD)
        return (total / n).sqrt().clamp_min(1e-12)
    return (x_BD - x_BD.mean(0, keepdim=True)).pow(2).sum(1).mean().sqrt().detach().clamp_min(1e-12)


def fold_input_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State (SAELens names) of an SAE that does not subtract b_dec before encoding, rewritten for one that
    does: x·W + b = (x − b_dec)·W + (b + b_dec·W) for b_enc and b_gate, and b_mag gets b_dec·(W ⊙ e^r_mag)."""
    out = dict(state)
    shift = state["b_dec"] @ state["W_enc"]
    for key in ("b_enc", "b_gate"):
        if key in out:
            out[key] = out[key] + shift
    if "b_mag" in out:
        out["b_mag"] = out["b_mag"] + shift * state["r_mag"].exp()
    return out


INPUT_TRANSFORMS = {
    "none": "the activations as collected",
    "center": "x − mean_d(x): each token's activation minus its mean over the d_model dimensions "
              "(what TransformerLens's center_writing_weights makes of every residual-stream write)",
}


def center(x: torch.Tensor) -> torch.Tensor:
    """x − mean over the last (d_model) dimension: x·P with P = I − 11ᵀ/D, a symmetric projection (P² = P)."""
    return x - x.mean(-1, keepdim=True)


def fold_centering(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State (SAELens names, an SAE that subtracts b_dec) of an SAE trained on centred inputs xP
    (P = I − 11ᵀ/D, `center`), rewritten to give the same latents on the raw x:

        (xP − b_dec)·W + b = (x − b_dec)·(PW) + b − mean(b_dec)·1ᵀW

    (since b_dec·(I − P) = mean(b_dec)·1ᵀ), so W_enc → PW (each column minus its mean over D) and b_enc,
    b_gate → b − mean(b_dec)·colsum(W); gated's magnitude path uses W ⊙ e^r_mag, so b_mag →
    b_mag − mean(b_dec)·colsum(W)·e^r_mag. Idempotent: PPW = PW and colsum(PW) = 0. The decoder is unchanged."""
    out = dict(state)
    W = state["W_enc"]
    shift = state["b_dec"].mean() * W.sum(0)
    out["W_enc"] = W - W.mean(0, keepdim=True)
    for key in ("b_enc", "b_gate"):
        if key in out:
            out[key] = out[key] - shift
    if "b_mag" in out:
        out["b_mag"] = out["b_mag"] - shift * state["r_mag"].exp()
    return out


class SAEBase(nn.Module):
    architecture = "base"  # SAELens architecture name written to cfg.json
    input_transform = "none"  # INPUT_TRANSFORMS key; loaders set it per SAE (module docstring)
    hookpoint: str | None = None  # our hookpoint name (`resid_pre.8`) when the SAE's config names one
    nested_widths: tuple[int, ...] | None = None  # a Matryoshka SAE's levels m_1 < … < F, when known (trained here, or
    # read from a file that names them: `sae.io`); None for a flat dictionary

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """The activation as this SAE was trained on it (`input_transform`): the reconstruction target."""
        if self.input_transform == "none":
            return x
        if self.input_transform == "center":
            return center(x)
        raise ValueError(f"input_transform={self.input_transform!r}; valid: {list(INPUT_TRANSFORMS)}")

    def __init__(self, d_in: int, d_sae: int, *, seed: int | None = None, dtype=torch.float32):
        super().__init__()
        self.d_in, self.d_sae = d_in, d_sae
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        bound = 1.0 / d_in**0.5
        W_enc = (torch.rand(d_in, d_sae, generator=gen, dtype=dtype) * 2 - 1) * bound
        self.W_enc = nn.Parameter(W_enc)
        self.b_enc = nn.Parameter(torch.zeros(d_sae, dtype=dtype))
        self.W_dec = nn.Parameter(W_enc.t().contiguous())  # row-major: sparse kernels gather rows
        self.b_dec = nn.Parameter(torch.zeros(d_in, dtype=dtype))
        self.normalize_decoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min_(1e-8))

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Project out the gradient component along each decoder row (keeps rows unit-norm to first order)."""
        if self.W_dec.grad is not None:  # two passes over [F, D], no temporary of that size
            g = self.W_dec.grad
            g.addcmul_(torch.linalg.vecdot(g, self.W_dec).unsqueeze(1), self.W_dec, value=-1)

    def pre_acts(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Dense pre-activations [B, F] = (x − b_dec) @ W_enc + b_enc."""
        return (x_BD - self.b_dec) @ self.W_enc + self.b_enc

    def decode(self, z_BF: torch.Tensor) -> torch.Tensor:
        return z_BF @ self.W_dec + self.b_dec

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:  # pragma: no cover - each architecture defines it
        raise NotImplementedError

    def forward(self, x_BD: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_BD))

    # SAELens layout ---------------------------------------------------------------
    def saelens_cfg(self) -> dict:
        """Architecture-specific cfg.json fields (beyond d_in, d_sae, dtype, device…)."""
        return {}

    def saelens_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().contiguous().float() for n, p in self.named_parameters()}

    @classmethod
    def from_saelens(cls, cfg: dict, state: dict[str, torch.Tensor]) -> "SAEBase":
        d_in, d_sae = state["W_enc"].shape
        if tuple(state["W_dec"].shape) != (d_sae, d_in):
            raise ValueError(f"W_dec has shape {tuple(state['W_dec'].shape)}; W_enc [{d_in}, {d_sae}] needs {(d_sae, d_in)}")
        if not cfg.get("apply_b_dec_to_input", True):
            state = fold_input_bias(state)
        sae = cls(d_in, d_sae, **cls._ctor_kwargs(cfg))
        own = dict(sae.named_parameters())
        with torch.no_grad():
            for name, value in cls._state_from_saelens(cfg, state).items():
                if tuple(value.shape) != tuple(own[name].shape):  # copy_ would broadcast a [1] into [d]
                    raise ValueError(f"{name} has shape {list(value.shape)}; a {d_in}-input, {d_sae}-latent SAE "
                                     f"needs {list(own[name].shape)}")
                own[name].copy_(value)  # a loaded decoder is kept as stored, not renormalised
        return sae

    @classmethod
    def _ctor_kwargs(cls, cfg: dict) -> dict:
        return {}

    @classmethod
    def _state_from_saelens(cls, cfg: dict, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return state
