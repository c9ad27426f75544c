"""The TopK selection: each row's k largest pre-activations, one definition on every device.

    topk_indices(pre [B, F], k) -> idx [B, K]: the k largest entries of each row; among entries equal to the
    k-th value, those first in row b's cyclic order o_b, o_b + 1, …, F − 1, 0, …, o_b − 1 of the indices,
    with o_b = (b · 2654435761) mod F (`tie_offsets`); returned in ascending index order (`topk.Selection`'s).

`torch.topk` leaves the choice among equal values to its implementation. Under bf16 autocast that choice is
not rare: for N(0, 1)-like pre-activations over 4,608 latents at k = 32, about 32% of rows have a tie at the
k-th value (bf16 keeps 8 significant bits), so two implementations pick different latents for a third of the
tokens. We fix the rule, so an SAE does not depend on which kernel chose its latents. The rule must not favour
any latent: "ties to the lower index" would make latent 0 win every tie it is in (in a test it moved bf16
training's FVU away from fp32's). With the offset spread over the rows, a latent wins a tie against a uniformly
random other latent in half the rows whatever its index (for i < j, i wins unless o_b falls in (i, j]).

Two implementations of that one rule, checked against each other and against a sort in `tests/test_select.py`:

- on the CPU, a C++ kernel (`topk_rows.cpp`, built once per machine by `torch.utils.cpp_extension` and
  cached under `~/.cache/torch_extensions`): per row, one vectorised pass takes the maximum of each block
  of 32 entries; the k-th largest block maximum τ bounds the k-th largest entry from below (k blocks hold an
  entry ≥ τ), so only the blocks whose maximum is ≥ τ (≈ k of F/32) are scanned for candidates ≥ τ, and a
  partial sort of those (≈ 1.3·k) by (value desc, cyclic rank asc) picks the k. Where the CPU has AVX-512 the
  same selection runs vectorised (groups of 32 taken as vector lanes, the k-th largest found by bisection on
  order-preserving integer keys, no sort: ≈ 2.5× the scalar row, the same indices). Cost ≈ two reads of the
  row from L1; ≈ 7–8× `torch.topk` + sort on [1,024, 4,608] and [4,096, 4,608] bf16 with 2 threads here (bench/RESULTS.md). It needs
  k ≤ F / 32 and fp32 or bf16 input;
- elsewhere (CUDA, other shapes or dtypes, or no C++ compiler — `SAESANITY_TOPK=torch` forces it): the
  k-th largest value v_k from `torch.topk`, then every entry > v_k and the first (k − #{> v_k}) entries equal
  to v_k in the row's cyclic order (one cumulative count), gathered in index order by `nonzero`.

NaN pre-activations are refused (`ValueError`), where `torch.topk` would rank them largest.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from pathlib import Path

import torch

from .. import machine

BLOCK = 32  # the kernel's block (topk_rows.cpp BS)
_KERNEL: dict = {}


def _cpu_tag() -> str:
    """A name for this CPU's instruction set: the kernel is built with -march=native, so a build is only reused
    on a CPU with the same flags (a home directory shared by machines of two kinds gets one build per kind)."""
    _, flags = machine._cpuinfo()
    return hashlib.sha1(f"{platform.machine()} {' '.join(sorted(flags))}".encode()).hexdigest()[:10]


def kernel():
    """The compiled `torch.ops.saesanity.topk_rows`, or None where it cannot be built (a warning says why)."""
    if "op" in _KERNEL:
        return _KERNEL["op"]
    op = None
    if os.environ.get("SAESANITY_TOPK", "").lower() != "torch":
        try:
            from torch.utils.cpp_extension import load

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load(name=f"saesanity_topk_{_cpu_tag()}", sources=[str(Path(__file__).with_name("topk_rows.cpp"))],
                     extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                     is_python_module=False, verbose=False)
            op = torch.ops.saesanity.topk_rows
        except Exception as e:  # no compiler, no ninja, a read-only home: the portable path gives the same result
            warnings.warn(f"saesanity: the CPU top-k kernel could not be built ({type(e).__name__}: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else e}); using torch.topk with the "
                          "same tie rule, ~3x slower on the CPU", RuntimeWarning, stacklevel=2)
    _KERNEL["op"] = op
    return op


def uses_kernel(pre: torch.Tensor, k: int) -> bool:
    """Whether `topk_indices(pre, k)` runs the CPU kernel."""
    return (pre.device.type == "cpu" and pre.dim() == 2 and pre.dtype in (torch.float32, torch.bfloat16)
            and 0 < k and k * BLOCK <= pre.shape[1] and kernel() is not None)


def topk_indices(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [B, k] of each row's k largest entries, ties to the lower index, ascending (module docstring)."""
    if pre.dim() != 2:
        raise ValueError(f"topk_indices: pre-activations must be [B, F], got shape {tuple(pre.shape)}")
    if not 0 < k <= pre.shape[1]:
        raise ValueError(f"topk_indices: k={k} must satisfy 0 < k <= F={pre.shape[1]}")
    if uses_kernel(pre, k):
        try:
            return kernel()(pre.contiguous(), k)
        except RuntimeError as e:
            if "NaN" in str(e):
                raise ValueError(f"NaN pre-activations: {str(e).splitlines()[0]}") from None
            raise
    return _topk_indices_torch(pre, k)


def tie_offsets(B: int, F: int, device=None) -> torch.Tensor:
    """o_b = (b · 2654435761) mod F for b < B [B] (Fibonacci hashing: consecutive rows spread over [0, F))."""
    return (torch.arange(B, dtype=torch.long, device=device) * 2654435761) % F


def _topk_indices_torch(pre: torch.Tensor, k: int) -> torch.Tensor:
    vk = pre.topk(k, dim=1, sorted=False).values
    if torch.isnan(vk).any():
        row = int(torch.isnan(vk).any(1).nonzero()[0])
        raise ValueError(f"NaN pre-activations: row {row}")
    vk = vk.amin(1, keepdim=True)  # the k-th largest value of each row
    above = pre > vk
    tied = pre == vk
    need = k - above.sum(1, keepdim=True)  # how many of the tied entries are kept, first in cyclic order
    keep = above | tied
    rows = (tied.sum(1, keepdim=True) > need).squeeze(1).nonzero().squeeze(1)  # rows with more ties than places
    if rows.numel():
        F = pre.shape[1]
        t, nd = tied[rows], need[rows]
        off = tie_offsets(pre.shape[0], F, pre.device)[rows][:, None]
        cum = t.cumsum(1)  # tied entries at or before each index
        before = torch.where(off > 0, cum.gather(1, (off - 1).clamp(min=0)), torch.zeros_like(off))  # before o_b
        cols = torch.arange(F, device=pre.device)[None, :]
        pos = torch.where(cols >= off, cum - before, cum + (cum[:, -1:] - before))  # 1-based place, cyclic order
        keep[rows] = above[rows] | (t & (pos <= nd))
    return keep.nonzero()[:, 1].view(pre.shape[0], k)


def batch_topk_csr(pre: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """BatchTopK's training selection (Bussmann et al. 2024): the n largest *positive* entries of the whole
    [B, F] batch, and every entry equal to the n-th (a tie at the threshold is kept whole, never broken by index),
    as CSR (crow [B + 1], col [nnz], columns ascending in each row) with the threshold t (the n-th largest positive
    value; the smallest positive value when fewer than n are positive, so then every positive entry is kept).

    On the CPU a C++ kernel (`topk_rows.cpp` `batch_topk_csr`: histograms of the positive values' bits, 2-3 passes
    over [B, F], then one to count and one to write); elsewhere `torch.topk` over the flattened batch. NaN refused."""
    if pre.dim() != 2 or n < 1:
        raise ValueError(f"batch_topk_csr: pre [B, F] and n >= 1, got shape {tuple(pre.shape)} and n={n}")
    if (pre.device.type == "cpu" and pre.dtype in (torch.float32, torch.bfloat16) and kernel() is not None):
        try:
            crow, col, t = torch.ops.saesanity.batch_topk_csr(pre.contiguous(), n)
            if col.numel() < n:  # fewer than n positive, all kept: t is the smallest of them (the kernel's bound is 0+)
                rows = torch.arange(pre.shape[0]).repeat_interleave(crow.diff())
                t = float(pre[rows, col].min()) if col.numel() else float("inf")
            return crow, col, float(t)
        except RuntimeError as e:
            if "NaN" in str(e):
                raise ValueError(f"NaN pre-activations: {str(e).splitlines()[0]}") from None
            raise
    if torch.isnan(pre).any():
        row = int(torch.isnan(pre).any(1).nonzero()[0])
        raise ValueError(f"NaN pre-activations: row {row}")
    pos = pre > 0
    n_pos = int(pos.sum())
    if n_pos == 0:
        t = float("inf")
    elif n_pos <= n:
        t = float(pre[pos].min())
    else:
        t = float(pre.flatten().topk(n, sorted=False).values.min())
    keep = pos & (pre >= t)
    crow = torch.zeros(pre.shape[0] + 1, dtype=torch.long, device=pre.device)
    crow[1:] = keep.sum(1).cumsum(0)
    return crow, keep.nonzero()[:, 1], t

