"""The TopK selection rule (`saesanity.sae.select`): the k largest of each row, ties in a per-row cyclic order
of the indices, by the C++ kernel and by the portable path, against a stable sort of the rotated row."""

import pytest
import torch

from saesanity.sae import select
from saesanity.sae.select import _topk_indices_torch, topk_indices


def reference(pre: torch.Tensor, k: int) -> torch.Tensor:
    """The definition, by brute force: rotate row b to start at its offset o_b, sort it stably (equal values keep
    the rotated order), take the first k and map back."""
    B, F = pre.shape
    out = []
    for b in range(B):
        o = (b * 2654435761) % F
        rot = torch.roll(pre[b].float(), -o)
        order = torch.sort(rot, descending=True, stable=True).indices[:k]
        out.append(((order + o) % F).sort().values)
    return torch.stack(out)


def test_tie_offsets_by_hand():
    assert select.tie_offsets(4, 10).tolist() == [0, 2654435761 % 10, 2 * 2654435761 % 10, 3 * 2654435761 % 10]
    assert select.tie_offsets(3, 10).tolist() == [0, 1, 2]


def test_no_latent_is_favoured_in_ties():
    F, k, B = 64, 1, 4096
    pre = torch.zeros(B, F)  # every row one big tie: each latent should win about B / F rows
    for idx in (topk_indices(pre, k), _topk_indices_torch(pre, k)):
        wins = torch.bincount(idx.reshape(-1), minlength=F).float()
        assert wins.min() > 0.5 * B / F and wins.max() < 1.5 * B / F


def tied_rows(B=64, F=2048, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F, generator=g)
    x[:, ::7] = x[:, :1]  # many exact ties, also at the k-th value
    x[3] = 0.0  # a row of one value: the first k indices
    x[4, 100:] = -1.0
    return x.to(dtype)


@pytest.mark.parametrize("F", [2048, 2100, 4609])  # whole 512-value chunks, and a tail after them (AVX-512 row)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 8, 32, 64])
def test_kernel_and_torch_path_match_the_definition(dtype, k, F):
    pre = tied_rows(F=F, dtype=dtype)
    ref = reference(pre, k)
    assert select.uses_kernel(pre, k), "the C++ kernel should build on this machine (g++ and ninja are here)"
    assert torch.equal(topk_indices(pre, k), ref)
    assert torch.equal(_topk_indices_torch(pre, k), ref)
    o = (3 * 2654435761) % pre.shape[1]  # a row of one value: the k indices from its offset on
    assert torch.equal(ref[3], ((torch.arange(k) + o) % pre.shape[1]).sort().values)


def test_ties_are_common_in_bf16_and_the_values_agree_with_torch_topk():
    torch.manual_seed(0)
    pre = (torch.randn(512, 576) @ (torch.randn(576, 4608) / 24)).bfloat16()
    idx = topk_indices(pre, 32)
    tv = pre.topk(32, dim=1).values
    assert torch.equal(pre.gather(1, idx).sort(1).values, tv.sort(1).values)  # the same k values, always
    assert torch.equal(idx, reference(pre, 32))
    assert (idx == pre.topk(32, dim=1).indices.sort(1).values).all(1).float().mean() < 0.95  # ties do occur


def test_signed_zeros_tie_and_the_kth_value_is_shared_by_many():
    """-0.0 == +0.0 is a tie (ranked by the cyclic order, as a sort sees it), and rows whose k-th value is held by
    many entries (in and after the last whole 512-value chunk) keep the first ones in cyclic order."""
    B, F = 48, 1100
    pre = torch.zeros(B, F)
    pre[::2] = -0.0
    pre[1::3, ::4] = -0.0
    pre[:, 1030:1040] = 1.0  # 10 above zero, in the tail
    pre[5] = torch.arange(F) % 3  # values 0 / 1 / 2: the k-th value 2 tied across the whole row
    for dtype in (torch.float32, torch.bfloat16):
        x = pre.to(dtype)
        for k in (4, 10, 16, 32):
            assert torch.equal(topk_indices(x, k), reference(x, k)), (dtype, k)


def test_shapes_the_kernel_does_not_take_use_the_same_rule():
    pre = tied_rows(B=5, F=40, dtype=torch.float32)  # k * 32 > F
    assert not select.uses_kernel(pre, 8)
    assert torch.equal(topk_indices(pre, 8), reference(pre, 8))
    half = tied_rows(dtype=torch.float16)
    assert not select.uses_kernel(half, 8)
    assert torch.equal(topk_indices(half, 8), reference(half, 8))
    nc = tied_rows(dtype=torch.float32).t().contiguous().t()  # a non-contiguous view goes through .contiguous()
    assert torch.equal(topk_indices(nc, 8), reference(nc, 8))


def test_bad_input_is_refused():
    pre = tied_rows(dtype=torch.float32)
    pre[5, 17] = float("nan")
    with pytest.raises(ValueError, match="NaN pre-activations: .*row 5"):
        topk_indices(pre, 8)
    with pytest.raises(ValueError, match="NaN pre-activations: row 5"):
        _topk_indices_torch(pre, 8)
    with pytest.raises(ValueError, match="must satisfy 0 < k"):
        topk_indices(pre, 0)
    with pytest.raises(ValueError, match=r"\[B, F\]"):
        topk_indices(pre[0], 4)


def test_forcing_the_torch_path(monkeypatch):
    monkeypatch.setitem(select._KERNEL, "op", None)
    pre = tied_rows()
    assert not select.uses_kernel(pre, 8)
    assert torch.equal(topk_indices(pre, 8), reference(pre, 8))


def test_a_failed_build_warns_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension as ext

    def no_compiler(*a, **kw):
        raise RuntimeError("Error building extension: g++ not found")

    monkeypatch.setattr(ext, "load", no_compiler)
    monkeypatch.delitem(select._KERNEL, "op", raising=False)
    with pytest.warns(RuntimeWarning, match="could not be built .*g\\+\\+ not found"):
        assert select.kernel() is None
    pre = tied_rows()
    assert torch.equal(topk_indices(pre, 8), reference(pre, 8))
