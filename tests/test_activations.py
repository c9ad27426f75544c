import dataclasses
import numpy as np
import pytest
import torch

from saesanity import activations as A
from saesanity.models import load_model


@pytest.fixture(scope="module", params=["llama", "neox"])
def lm(request, tiny_llama_dir, tiny_neox_dir):
    return load_model(str(tiny_llama_dir if request.param == "llama" else tiny_neox_dir))


def test_hookpoints_match_hidden_states(lm):
    ids = torch.randint(0, 97, (2, 10))
    with torch.no_grad():
        hs = lm.model(ids, output_hidden_states=True).hidden_states
    out = A.run_to_hookpoints(lm, ids, ["resid_pre.1", "resid_post.1", "resid_post.0"])
    torch.testing.assert_close(out["resid_post.0"], hs[1])
    torch.testing.assert_close(out["resid_pre.1"], hs[1])
    torch.testing.assert_close(out["resid_post.1"], hs[2])


def test_mlp_and_attn_outputs_are_the_blocks_outputs(lm):
    ids = torch.randint(0, 97, (2, 10))
    layer = A.decoder_layers(lm.model)[1]
    seen = {}
    h1 = layer.mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", o))
    attn = getattr(layer, "self_attn", None) or layer.attention
    h2 = attn.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o[0]))
    with torch.no_grad():
        lm.model(ids)
    h1.remove(), h2.remove()
    out = A.run_to_hookpoints(lm, ids, ["mlp_out.1", "attn_out.1"])
    torch.testing.assert_close(out["mlp_out.1"], seen["mlp"])
    torch.testing.assert_close(out["attn_out.1"], seen["attn"])


def test_forward_stops_after_deepest_layer(lm):
    layers = A.decoder_layers(lm.model)
    ran = []
    hooks = [l.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, l in enumerate(layers)]
    head = lm.model.get_output_embeddings().register_forward_hook(lambda m, a, o: ran.append("head"))
    A.run_to_hookpoints(lm, torch.randint(0, 97, (1, 5)), ["mlp_out.0", "resid_post.1"])
    for h in hooks + [head]:
        h.remove()
    assert ran == [0, 1]


def test_bad_hookpoints(lm):
    with pytest.raises(A.HookpointError, match=r"'resid_post.40' does not exist; .* has layers 0–2"):
        A.run_to_hookpoints(lm, torch.zeros(1, 3, dtype=torch.long), ["resid_post.40"])
    with pytest.raises(A.HookpointError, match="'mlp_in.1' is not valid"):
        A.parse_hookpoint("mlp_in.1", 3)


@pytest.fixture
def spec(tiny_llama_dir):
    return A.ActivationSpec(model=str(tiny_llama_dir), variant="trained", corpus="debian:fortunes", n_tokens=630,
                            seq_len=64, seed=0)


def test_collect_caches_and_reuses(iso_cache, spec, monkeypatch):
    calls = []
    real = A.run_to_hookpoints
    monkeypatch.setattr(A, "run_to_hookpoints", lambda *a, **k: calls.append(1) or real(*a, **k))
    acts = A.collect(spec, ["resid_post.1", "mlp_out.0"], batch_size=4, progress=False)
    n_batches = len(calls)
    assert acts["resid_post.1"].shape == (10 * 63, 32) and n_batches == 3  # 10 sequences, first token dropped
    again = A.collect(spec, ["resid_post.1", "mlp_out.0"], batch_size=4, progress=False)
    assert len(calls) == n_batches  # nothing recomputed
    np.testing.assert_array_equal(acts["mlp_out.0"], again["mlp_out.0"])
    A.collect(spec, ["resid_post.1", "attn_out.2"], batch_size=4, progress=False)
    assert len(calls) == 2 * n_batches  # only the new hookpoint computed, in one pass


def test_collected_rows_match_direct_forward(iso_cache, spec):
    acts = A.collect(spec, ["resid_post.2"], batch_size=3, progress=False)["resid_post.2"]
    (d,) = A.artifact_dirs(spec, ["resid_post.2"])
    seqs = np.load(d / "tokens.npy")
    lm = load_model(spec.model)
    direct = A.run_to_hookpoints(lm, torch.from_numpy(seqs[:2]).long(), ["resid_post.2"])["resid_post.2"]
    np.testing.assert_allclose(acts[:63], direct[0, 1:].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts[63:126], direct[1, 1:].numpy(), rtol=1e-5, atol=1e-5)


def test_nan_activations_rejected(iso_cache, spec, monkeypatch):
    real = A.run_to_hookpoints

    def poisoned(*a, **k):
        out = real(*a, **k)
        return {h: v.clone().fill_(float("nan")) for h, v in out.items()}

    monkeypatch.setattr(A, "run_to_hookpoints", poisoned)
    with pytest.raises(A.ActivationError, match="contain NaN/inf"):
        A.collect(spec, ["resid_post.0"], batch_size=4, progress=False)


def test_too_few_tokens_in_corpus(iso_cache, spec):
    import dataclasses

    big = dataclasses.replace(spec, n_tokens=10**9)
    with pytest.raises(A.ActivationError, match="n_tokens=1,000,000,000 needs"):
        A.collect(big, ["resid_post.0"], progress=False)


def test_interrupted_collection_resumes(iso_cache, spec, monkeypatch):
    real = A.run_to_hookpoints
    _interrupted(spec, monkeypatch)
    count = []
    monkeypatch.setattr(A, "run_to_hookpoints", lambda *a, **k: count.append(1) or real(*a, **k))
    acts = A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
    assert len(count) == 1  # two of three batches were kept
    (d,) = A.artifact_dirs(spec, ["resid_post.1"])
    seqs = torch.from_numpy(np.load(d / "tokens.npy")).long()
    direct = real(load_model(spec.model), seqs, ["resid_post.1"])["resid_post.1"][:, 1:].reshape(-1, 32)
    np.testing.assert_allclose(acts, direct.numpy(), rtol=1e-5, atol=1e-5)  # resumed == uninterrupted


def test_bf16_forward_is_its_own_artifact_close_to_fp32(iso_cache, spec):
    fp32 = A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
    bf16_spec = dataclasses.replace(spec, model_dtype="bfloat16")
    bf16 = A.collect(bf16_spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
    assert A.artifact_dirs(spec, ["resid_post.1"]) != A.artifact_dirs(bf16_spec, ["resid_post.1"])
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)
    rel = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert np.median(rel) < 0.05  # bf16 keeps 8 mantissa bits: ~0.4% per op, a few layers compound it


def test_unknown_model_dtype(tiny_llama_dir):
    from saesanity.models import ModelError, load_model

    with pytest.raises(ModelError, match=r"dtype 'int8'; valid: \['auto', 'float32', 'bfloat16', 'float16'\]"):
        load_model(str(tiny_llama_dir), dtype="int8")


@pytest.mark.parametrize("hookpoint", ["resid_pre.1", "resid_post.1", "mlp_out.0", "attn_out.2"])
def test_replaced_splices_the_activation(lm, hookpoint):
    ids = torch.randint(0, lm.model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = lm.model(ids).logits
        with A.replaced(lm, hookpoint, lambda a: a):  # identity splice changes nothing
            same = lm.model(ids).logits
        with A.replaced(lm, hookpoint, lambda a: torch.zeros_like(a)):
            zeroed = lm.model(ids).logits
            inner = A.run_to_hookpoints(lm, ids, [hookpoint])[hookpoint]
    torch.testing.assert_close(same, clean)
    assert not torch.allclose(zeroed, clean)
    if hookpoint != "resid_pre.1":  # a pre-hook's input is seen before the replacement
        assert inner.abs().max() == 0
    with torch.no_grad():
        after = lm.model(ids).logits  # the hook is gone after the block
    torch.testing.assert_close(after, clean)


def _interrupted(spec, monkeypatch):
    """Collect `spec` at resid_post.1 until the third batch, recording progress after every batch; the work folder."""
    real = A.run_to_hookpoints
    count = []

    def dies_on_third(*a, **k):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(A, "_SAVE_EVERY_S", 0.0)
    monkeypatch.setattr(A, "run_to_hookpoints", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)
    monkeypatch.setattr(A, "run_to_hookpoints", real)
    (final,) = A.artifact_dirs(spec, ["resid_post.1"])
    return final.with_name(final.name + ".partial")


@pytest.mark.parametrize("damage", ["progress_garbage", "progress_out_of_range", "acts_truncated", "lost_rows",
                                    "other_tokens"])
def test_an_unusable_interrupted_collection_restarts_instead_of_failing_or_publishing_zeros(
        iso_cache, spec, monkeypatch, capsys, damage, tmp_path):
    work = _interrupted(spec, monkeypatch)
    if damage == "progress_garbage":
        (work / "progress.json").write_text("{not json")
    elif damage == "progress_out_of_range":
        (work / "progress.json").write_text('{"seqs_done": 9999}')
    elif damage == "acts_truncated":
        with open(work / "acts.npy", "r+b") as f:
            f.truncate(200)
    elif damage == "lost_rows":  # progress says 8 sequences are written; some of their pages never reached disk
        arr = np.lib.format.open_memmap(work / "acts.npy", mode="r+")
        arr[5:40] = 0
        arr.flush()
        del arr
    else:
        t = np.load(work / "tokens.npy")
        np.save(work / "tokens.npy", t[::-1].copy())
    acts = np.array(A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"])
    assert f"restarting the interrupted collection in {work}" in capsys.readouterr().err
    assert acts.any(axis=1).all()  # no all-zero row was published
    monkeypatch.setenv("SAESANITY_CACHE", str(__import__("conftest").linked_cache(tmp_path / "fresh")))
    np.testing.assert_array_equal(acts, A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"])


def test_a_full_disk_is_a_clear_error_before_any_row_is_written(iso_cache, spec, monkeypatch):
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(A.os, "posix_fallocate", full)
    with pytest.raises(A.ActivationError, match=r"cannot reserve 80\.8 kB for .*acts\.npy \(No space left on device; "
                                                r"[\d.]+ [kMGT]?B free there\): free space or set SAESANITY_CACHE"):
        A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)


def test_control_activations_are_keyed_on_the_batch_size_their_noise_depends_on(iso_cache, spec):
    from saesanity.cache import artifact_path

    c4 = dataclasses.replace(spec, variant="control", noise_batch=4)
    c2 = dataclasses.replace(spec, variant="control", noise_batch=2)
    a4 = A.collect(c4, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
    a2 = A.collect(c2, ["resid_post.1"], batch_size=2, progress=False)["resid_post.1"]
    assert A.artifact_dirs(c4, ["resid_post.1"]) != A.artifact_dirs(c2, ["resid_post.1"])
    assert not np.allclose(a4, a2)  # other draws of the noise: not the same artifact
    with pytest.raises(A.ActivationError, match="noise_batch=4 must equal batch_size=8"):
        A.collect(c4, ["resid_post.1"], batch_size=8, progress=False)
    # every other variant's key is what it was before noise_batch existed
    old = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("noise_batch", "store_dtype")}
    old["model_content"] = __import__("saesanity.content").content.files_digest(spec.model)  # a local model folder
    assert A.artifact_dirs(spec, ["mlp_out.0"]) == [artifact_path("activations", dict(old, hookpoint="mlp_out.0",
                                                                                         dtype="float32"), A._VERSION)]


def test_float16_store_is_the_float32_array_rounded_and_keyed_apart(iso_cache, spec):
    """store_dtype float16: half the bytes, each value the fp32 collection's rounded to nearest float16, under its
    own key; the float32 key is what it was before the option existed (no `store_dtype` in the key fields)."""
    import dataclasses

    half = dataclasses.replace(spec, store_dtype="float16")
    a32 = A.collect(spec, ["mlp_out.1"], batch_size=4, progress=False)["mlp_out.1"]
    a16 = A.collect(half, ["mlp_out.1"], batch_size=4, progress=False)["mlp_out.1"]
    assert a16.dtype == np.float16 and a16.shape == a32.shape and a16.nbytes * 2 == a32.nbytes
    np.testing.assert_array_equal(a16, a32.astype(np.float16))
    assert A.artifact_dirs(half, ["mlp_out.1"]) != A.artifact_dirs(spec, ["mlp_out.1"])
    assert "store_dtype" not in A.key_fields(spec)
    rel = np.linalg.norm(a16.astype(np.float32) - a32) / np.linalg.norm(a32)
    assert 0 < rel < 2.0 ** -11  # rounding to 11 significant bits


def test_float16_store_refuses_values_beyond_its_range(iso_cache, spec, monkeypatch):
    import dataclasses

    real = A.run_to_hookpoints
    monkeypatch.setattr(A, "run_to_hookpoints", lambda *a, **k: {h: v * 1e6 for h, v in real(*a, **k).items()})
    with pytest.raises(A.ActivationError, match=r"beyond float16's 65504 .*store it as float32"):
        A.collect(dataclasses.replace(spec, store_dtype="float16"), ["resid_post.0"], batch_size=4, progress=False)
    with pytest.raises(A.ActivationError, match=r"store_dtype='bfloat16'; valid: \['float32', 'float16'\]"):
        dataclasses.replace(spec, store_dtype="bfloat16")
