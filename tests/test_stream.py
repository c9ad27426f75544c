"""ModelSource: training straight from the model's forward pass equals training on `collect`'s cached
array in the same batch order, bitwise; memory is one chunk, disk nothing; ranks serve disjoint rows.
Several hookpoints from one source train in one pass, one forward per chunk, bitwise as separate runs."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from saesanity.activations import ActivationSpec, collect
from saesanity.corpus import token_sequences
from saesanity.models import load_model
from saesanity.sae import TrainConfig
from saesanity.sae.train import MemmapSource, train_families, train_family
from saesanity.stream import ModelSource


def _setup(model_dir, variant, n_steps=6, batch_size=256):
    spec = ActivationSpec(model=str(model_dir), variant=variant, corpus="debian:fortunes",
                          n_tokens=n_steps * batch_size, seq_len=32, seed=3,
                          noise_batch=4 if variant == "control" else 0)  # the model_batch_size below
    lm = load_model(spec.model, variant)
    tokens = token_sequences(spec.corpus, lm.tokenizer, lm.tokenizer_id, spec.seq_len, seed=spec.seed)[:spec.n_seqs()]
    return spec, lm, tokens


@pytest.mark.parametrize("variant", ["trained", "control"])
def test_streamed_training_equals_cached_training(iso_cache, tiny_llama_dir, variant):
    spec, lm, tokens = _setup(tiny_llama_dir, variant)
    # 3 batches of 256 rows a chunk: chunk edges fall inside sequences (31 rows each)
    src = ModelSource(lm, tokens, "mlp_out.1", batch_size=256, batches_per_chunk=3, n_steps=6, model_batch_size=4)
    cfgs = [TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=6 * 256, seed=s, dead_tokens=256) for s in (0, 1)]
    streamed = train_family(src, cfgs, progress=False)
    assert not (iso_cache / "activations").exists()  # nothing cached on disk
    assert src._chunk[1]["mlp_out.1"].shape == (3 * 256, lm.d_model)  # memory: one chunk
    acts = collect(spec, ["mlp_out.1"], batch_size=4, progress=False)["mlp_out.1"]
    order = src.order()
    assert order.shape == (6, 256) and np.array_equal(order, np.sort(order, axis=1))
    assert np.unique(order).size == order.size  # every row at most once
    cached = train_family(MemmapSource(acts, order), cfgs, progress=False)
    for (a, la), (b, lb) in zip(streamed, cached):
        for name, t in a.state_dict().items():
            assert torch.equal(t, b.state_dict()[name]), name
        assert la == lb


def test_two_ranks_stream_the_same_batches_as_one(iso_cache, tiny_llama_dir, tmp_path):
    """Under torchrun (2 gloo ranks) each rank runs the forward of half of each chunk and all-gathers it: the
    SAEs equal one rank's, which equal training on `collect`'s array in `order()` (to float reassociation)."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dist_train import family, stream_source
    from test_train_family import _torchrun

    os.environ["DIST_STREAM_MODEL"] = str(tiny_llama_dir)
    try:
        r = _torchrun(tmp_path, tmp_path / "two.pt", "-", "topk,relu")
    finally:
        del os.environ["DIST_STREAM_MODEL"]
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    cfgs = family(["topk", "relu"])
    one = train_family(stream_source(str(tiny_llama_dir), 16), cfgs, progress=False)
    for state, (sae, _) in zip(two["states"], one):
        for name, t in sae.state_dict().items():
            torch.testing.assert_close(state[name], t, rtol=1e-5, atol=1e-6, msg=name)


HOOKPOINTS = ["mlp_out.1", "resid_post.0", "attn_out.2"]  # three layers, three kinds (d_model each)


def _hookpoint_families():
    base = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=6 * 256, dead_tokens=256, log_every=2)
    return {"mlp_out.1": [base, dataclasses.replace(base, seed=1)],
            "resid_post.0": [dataclasses.replace(base, architecture="relu", l1_coefficient=0.3),
                             dataclasses.replace(base, d_sae=96, k=6, seed=2, n_tokens=3 * 256)],  # stops early
            "attn_out.2": [dataclasses.replace(base, architecture="jumprelu", seed=3)]}


class _Forwards:
    """Counts the model's forward passes (its input embedding runs once per pass) and the hookpoints asked."""

    def __init__(self, lm, monkeypatch):
        import saesanity.stream as stream

        self.n, self.asked = 0, []
        lm.model.get_input_embeddings().register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))
        real = stream.run_to_hookpoints
        monkeypatch.setattr(stream, "run_to_hookpoints",
                            lambda lm_, ids, hps: self.asked.append(list(hps)) or real(lm_, ids, hps))


def test_hookpoints_in_one_pass_equal_separate_passes(iso_cache, tiny_llama_dir, monkeypatch):
    """Every hookpoint's family trained from one multi-hookpoint source, together (`train_families` over its
    views), is bitwise each family trained alone from its own single-hookpoint source; the model forward runs
    once per chunk for all hookpoints, not once per hookpoint; memory is one chunk per hookpoint."""
    _, lm, tokens = _setup(tiny_llama_dir, "control")  # control: the Gaussian inputs must be redrawn identically
    count = _Forwards(lm, monkeypatch)
    fams = _hookpoint_families()
    kw = dict(batch_size=256, batches_per_chunk=3, n_steps=6, model_batch_size=4)  # chunk edges inside sequences
    multi = ModelSource(lm, tokens, HOOKPOINTS, **kw)
    held_before = []
    real_chunk = multi._chunk_rows
    multi._chunk_rows = lambda *a: held_before.append(multi._chunk) or real_chunk(*a)
    together = train_families([(multi.view(h), fams[h]) for h in HOOKPOINTS], progress=False)
    one_pass, asked = count.n, count.asked
    assert all(a == HOOKPOINTS for a in asked)  # each forward computed every hookpoint
    assert held_before == [None, None]  # 2 chunks, the first freed before the second was computed
    assert sorted(multi._chunk[1]) == sorted(HOOKPOINTS)
    assert all(t.shape == (3 * 256, lm.d_model) for t in multi._chunk[1].values())  # one chunk per hookpoint
    per_hookpoint = []
    for h, res in zip(HOOKPOINTS, together):
        count.n = 0
        alone = train_family(ModelSource(lm, tokens, h, **kw), fams[h], progress=False)
        per_hookpoint.append(count.n)
        for cfg, (a, la), (b, lb) in zip(fams[h], res, alone):
            for name, t in a.state_dict().items():
                assert torch.equal(t, b.state_dict()[name]), (h, cfg.architecture, name)
            assert la == lb
    assert one_pass == per_hookpoint[0] > 0  # one pass costs the forwards of one hookpoint's pass
    assert per_hookpoint == [one_pass] * len(HOOKPOINTS)  # separately: once per hookpoint


def test_two_ranks_train_several_hookpoints_as_one(iso_cache, tiny_llama_dir, tmp_path):
    """Under torchrun (2 gloo ranks) a two-hookpoint source, each rank running the forward of half of each chunk
    for both hookpoints, trains every hookpoint's SAEs as one rank does (to float reassociation)."""
    import os
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from dist_train import family, stream_source
    from test_train_family import _torchrun

    hps = ["mlp_out.1", "resid_post.2"]
    os.environ.update(DIST_STREAM_MODEL=str(tiny_llama_dir), DIST_STREAM_HOOKPOINTS=",".join(hps))
    try:
        r = _torchrun(tmp_path, tmp_path / "two.pt", "-", "topk,relu")
    finally:
        del os.environ["DIST_STREAM_MODEL"], os.environ["DIST_STREAM_HOOKPOINTS"]
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    cfgs = family(["topk", "relu"])
    source = stream_source(str(tiny_llama_dir), 16, hps)
    one = [m for fam in train_families([(source.view(h), cfgs) for h in hps], progress=False) for m in fam]
    assert len(two["states"]) == len(one) == 4
    for state, (sae, _) in zip(two["states"], one):
        for name, t in sae.state_dict().items():
            torch.testing.assert_close(state[name], t, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(one[0][0].W_dec, one[2][0].W_dec)  # the hookpoints' SAEs differ: they saw their own data


def test_bad_stream_settings(iso_cache, tiny_llama_dir):
    spec, lm, tokens = _setup(tiny_llama_dir, "trained")
    with pytest.raises(ValueError, match=r"7 steps of 256 rows need .* give 6 steps"):
        ModelSource(lm, tokens, "mlp_out.1", batch_size=256, batches_per_chunk=3, n_steps=7)
    with pytest.raises(ValueError, match="drop_first=31 must be below seq_len-1=31"):
        ModelSource(lm, tokens, "mlp_out.1", batch_size=256, drop_first=31)
    src = ModelSource(lm, tokens, "mlp_out.1", batch_size=256, batches_per_chunk=3, n_steps=6)
    with pytest.raises(ValueError, match="batch_size=256 must be divisible by the world size 3"):
        src.batch(0, 0, 3)
    with pytest.raises(IndexError, match=r"step 6 outside \[0, 6\)"):
        src.batch(6)
    with pytest.raises(ValueError, match=r"hookpoints \['mlp_out.1', 'mlp_out.1'\]: need at least one, each named once"):
        ModelSource(lm, tokens, ["mlp_out.1", "mlp_out.1"], batch_size=256)
    with pytest.raises(ValueError, match=r"hookpoint 'mlp_out.7' does not exist"):
        ModelSource(lm, tokens, ["mlp_out.1", "mlp_out.7"], batch_size=256)
    multi = ModelSource(lm, tokens, ["mlp_out.1", "resid_post.2"], batch_size=256, batches_per_chunk=3, n_steps=6)
    with pytest.raises(ValueError, match=r"serves hookpoints \['mlp_out.1', 'resid_post.2'\]: take one's batches with view"):
        multi.batch(0)
    with pytest.raises(ValueError, match=r"hookpoint 'attn_out.1' is not one this source serves"):
        multi.view("attn_out.1")
