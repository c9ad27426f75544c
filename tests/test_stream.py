"""ModelSource: training straight from the model's forward pass equals training on `collect`'s cached
array in the same batch order, bitwise; memory is one chunk, disk nothing; ranks serve disjoint rows."""

from pathlib import Path

import numpy as np
import pytest
import torch

from saesanity.activations import ActivationSpec, collect
from saesanity.corpus import token_sequences
from saesanity.models import load_model
from saesanity.sae import TrainConfig
from saesanity.sae.train import MemmapSource, train_family
from saesanity.stream import ModelSource


def _setup(model_dir, variant, n_steps=6, batch_size=256):
    spec = ActivationSpec(model=str(model_dir), variant=variant, corpus="debian:fortunes",
                          n_tokens=n_steps * batch_size, seq_len=32, seed=3)
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
    assert src._chunk[1].shape == (3 * 256, lm.d_model)  # memory: one chunk
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
