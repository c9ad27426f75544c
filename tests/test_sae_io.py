"""Loaders for the ecosystem's SAE formats: every format made by that library's own code where it
installs from PyPI (sae-lens, eai-sparsify, dictionary-learning's classes), loaded by ours, and our
encode/decode checked against their forward pass on the same inputs."""

import importlib
import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saesanity.sae import GatedSAE, JumpReLUSAE, ReLUSAE, TopKSAE
from saesanity.sae.io import (FORMATS, SAEFormatError, detect_format, find_saes, load_sae, load_saes, resolve,
                              save_saelens)


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter (and float buffer) to random values, so no bias or gate hides a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _x(d: int, n: int = 64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(99))


def _same_forward(got, theirs, d: int, rtol: float) -> None:
    """Our encode, decode and forward equal another library's SAE object on the same inputs (atol 1e-5)."""
    x = _x(d)
    with torch.no_grad():
        z = theirs.encode(x)
        torch.testing.assert_close(got.encode(x), z, rtol=rtol, atol=1e-5)
        torch.testing.assert_close(got.decode(z), theirs.decode(z), rtol=rtol, atol=1e-5)
        torch.testing.assert_close(got(x), theirs(x), rtol=rtol, atol=1e-5)


# ---------------------------------------------------------------- SAELens (its own classes)

def _saelens_sae(arch: str, d: int, f: int, **kw):
    import sae_lens as S

    cls, cfg_cls = {"standard": (S.StandardSAE, S.StandardSAEConfig), "topk": (S.TopKSAE, S.TopKSAEConfig),
                    "jumprelu": (S.JumpReLUSAE, S.JumpReLUSAEConfig), "gated": (S.GatedSAE, S.GatedSAEConfig)}[arch]
    sae = cls(cfg_cls(d_in=d, d_sae=f, **kw))
    _randomise(sae, 3)
    if arch == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(sae.threshold.abs())
    return sae


@pytest.mark.parametrize("arch,kw,ours", [
    ("standard", {}, ReLUSAE), ("topk", {"k": 5}, TopKSAE), ("gated", {}, GatedSAE),
    ("jumprelu", {}, JumpReLUSAE),
    ("jumprelu", {"apply_b_dec_to_input": False}, JumpReLUSAE),  # Gemma Scope's setting
    ("standard", {"apply_b_dec_to_input": False}, ReLUSAE),
    ("gated", {"apply_b_dec_to_input": False}, GatedSAE),
])
def test_saelens_v6_folder_matches_their_forward(tmp_path, arch, kw, ours):
    theirs = _saelens_sae(arch, 12, 40, **kw)
    theirs.save_model(str(tmp_path))
    assert detect_format(tmp_path) == "saelens"
    got = load_sae(tmp_path)
    assert type(got) is ours
    _same_forward(got, theirs, 12, rtol=1e-5)


def _pre6_folder(tmp_path, cfg_extra: dict, state: dict) -> None:
    """A folder as sae_lens 3.x–5.x wrote it: `activation_fn_str`, `hook_point`, boolean normalisation."""
    d, f = state["W_enc"].shape
    cfg = {"architecture": "standard", "d_in": d, "d_sae": f, "dtype": "float32", "device": "cpu",
           "model_name": "gpt2-small", "hook_point": "blocks.8.hook_resid_pre", "hook_point_layer": 8,
           "hook_point_head_index": None, "activation_fn_str": "relu", "apply_b_dec_to_input": True,
           "finetuning_scaling_factor": False, "context_size": 128, "dataset_path": "Skylion007/openwebtext",
           "normalize_activations": False, "sae_lens_training_version": "3.0.0", **cfg_extra}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(state, tmp_path / "sae_weights.safetensors")


def _plain_state(d: int, f: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d, f, generator=g) * 0.3, "b_enc": torch.randn(f, generator=g) * 0.3,
            "W_dec": torch.randn(f, d, generator=g) * 0.3, "b_dec": torch.randn(d, generator=g) * 0.3}


@pytest.mark.parametrize("extra,ours", [({}, ReLUSAE),
                                        ({"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 6}}, TopKSAE)])
def test_saelens_pre6_folder_matches_sae_lens_reading_it(tmp_path, extra, ours):
    """sae-lens 6 reads pre-6.0 folders itself (`handle_pre_6_0_config`); ours must agree with it."""
    from sae_lens import SAE

    _pre6_folder(tmp_path, extra, _plain_state(10, 30, 1))
    theirs = SAE.load_from_disk(str(tmp_path))
    got = load_sae(tmp_path)
    assert type(got) is ours and (not extra or got.k == 6)
    x = _x(10)
    with torch.no_grad():
        torch.testing.assert_close(got.encode(x), theirs.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_saelens_pre6_finetuning_scaling_factor_by_hand(tmp_path):
    """sae-lens 5 decoded (z ⊙ s)·W_dec + b_dec; sae-lens 6 no longer reads `scaling_factor`, so the
    reference is the formula itself."""
    st = _plain_state(8, 20, 2)
    s = torch.rand(20) + 0.5
    _pre6_folder(tmp_path, {"finetuning_scaling_factor": True}, {**st, "scaling_factor": s})
    got = load_sae(tmp_path)
    x = _x(8)
    z = torch.relu((x - st["b_dec"]) @ st["W_enc"] + st["b_enc"])
    with torch.no_grad():
        torch.testing.assert_close(got(x), (z * s) @ st["W_dec"] + st["b_dec"], rtol=1e-5, atol=1e-5)
    _pre6_folder(tmp_path, {"finetuning_scaling_factor": False}, {**st, "scaling_factor": s})
    with pytest.raises(SAEFormatError, match="finetuning_scaling_factor is false"):
        load_sae(tmp_path)


@pytest.mark.parametrize("extra,match", [({"activation_fn_str": "tanh-relu"}, "activation function 'tanh-relu'"),
                                         ({"normalize_activations": True}, "normalize_activations='expected_average"),
                                         ({"architecture": "transcoder"}, "architecture 'transcoder'")])
def test_saelens_unsupported_configs_say_why(tmp_path, extra, match):
    _pre6_folder(tmp_path, extra, _plain_state(4, 8, 0))
    with pytest.raises(SAEFormatError, match=match):
        load_sae(tmp_path)


# ---------------------------------------------------------------- sparsify (eai-sparsify's own code)

def _sparsify_coder(d: int, f: int, k: int, seed: int, **cfg):
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    coder = SparseCoder(d, SparseCoderConfig(num_latents=f, k=k, **cfg))
    with torch.no_grad():
        coder.encoder.bias.normal_(0, 0.3)
        coder.b_dec.normal_(0, 0.3)
    return coder


def _dense(acts_BK: torch.Tensor, idx_BK: torch.Tensor, f: int) -> torch.Tensor:
    return torch.zeros(acts_BK.shape[0], f).scatter_(1, idx_BK, acts_BK)


def test_sparsify_folder_matches_their_forward(tmp_path):
    coder = _sparsify_coder(16, 48, 4, 0)
    coder.save_to_disk(tmp_path / "layers.3")
    assert detect_format(tmp_path / "layers.3") == "sparsify"
    got = load_sae(tmp_path / "layers.3")
    assert isinstance(got, TopKSAE) and got.k == 4
    x = _x(16)
    with torch.no_grad():
        out = coder.encode(x)
        z = _dense(out.top_acts, out.top_indices, 48)
        torch.testing.assert_close(got.encode(x), z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.decode(z), coder.decode(out.top_acts, out.top_indices), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got(x), coder(x).sae_out, rtol=1e-5, atol=1e-5)


def test_sparsify_multi_seed_run(tmp_path):
    """A run with `init_seeds` keeps `<hookpoint>/seed<N>/`; every seed is found, naturally sorted."""
    coders = {s: _sparsify_coder(8, 24, 3, s) for s in (0, 2, 10)}
    for s, c in coders.items():
        c.save_to_disk(tmp_path / "run" / "layers.2" / f"seed{s}")
    assert list(find_saes(tmp_path / "run")) == ["layers.2/seed0", "layers.2/seed2", "layers.2/seed10"]
    saes = load_saes(tmp_path / "run" / "layers.2")
    assert list(saes) == ["seed0", "seed2", "seed10"]
    x = _x(8)
    with torch.no_grad():
        for s, c in coders.items():
            torch.testing.assert_close(saes[f"seed{s}"](x), c(x).sae_out, rtol=1e-5, atol=1e-5)
    with pytest.raises(SAEFormatError, match=r"holds 3 SAEs \(layers.2/seed0, layers.2/seed2, layers.2/seed10\)"):
        load_sae(tmp_path / "run")


@pytest.mark.parametrize("cfg,match", [({"transcode": True}, "transcode=true"),
                                       ({"skip_connection": True}, "skip_connection=true")])
def test_sparsify_non_autoencoders_refused(tmp_path, cfg, match):
    _sparsify_coder(8, 24, 3, 0, **cfg).save_to_disk(tmp_path)
    with pytest.raises(SAEFormatError, match=match):
        load_sae(tmp_path)


# ---------------------------------------------------------------- dictionary_learning (its own classes)

def _dl(module: str):
    """A dictionary_learning submodule, imported without the package's __init__ (which pulls nnsight for
    its activation buffer); the dictionary classes themselves need only torch and einops."""
    if "dictionary_learning" not in sys.modules:
        spec = importlib.util.find_spec("dictionary_learning")
        assert spec is not None, "dictionary-learning is installed by `make setup` (pip --no-deps)"
        pkg = types.ModuleType("dictionary_learning")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["dictionary_learning"] = pkg
    return importlib.import_module(f"dictionary_learning.{module}")


def _dl_save(folder, ae, trainer_cfg: dict) -> None:
    """What their `trainSAE` writes: `ae.pt` = the state dict, `config.json` = {"trainer": trainer.config}."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu() for k, v in ae.state_dict().items()}, folder / "ae.pt")
    (folder / "config.json").write_text(json.dumps({"trainer": trainer_cfg}, indent=4))


def _dl_cases():
    D, F = 12, 36
    dic = _dl("dictionary")
    tk = _dl("trainers.top_k")
    btk = _dl("trainers.batch_top_k")

    def jump():
        ae = dic.JumpReluAutoEncoder(D, F)
        _randomise(ae, 5)
        with torch.no_grad():
            ae.threshold.copy_(ae.threshold.abs())
        return ae

    def btopk(theta):
        ae = btk.BatchTopKSAE(D, F, 4)
        _randomise(ae, 6)
        ae.threshold.fill_(theta)
        return ae

    return {
        "AutoEncoder": (lambda: dic.AutoEncoder(D, F), ReLUSAE, lambda p: dic.AutoEncoder.from_pretrained(p)),
        "AutoEncoderNew": (lambda: dic.AutoEncoderNew(D, F), ReLUSAE, lambda p: dic.AutoEncoderNew.from_pretrained(p)),
        "GatedAutoEncoder": (lambda: dic.GatedAutoEncoder(D, F), GatedSAE,
                             lambda p: dic.GatedAutoEncoder.from_pretrained(p)),
        "JumpReluAutoEncoder": (jump, JumpReLUSAE, lambda p: dic.JumpReluAutoEncoder.from_pretrained(p)),
        "AutoEncoderTopK": (lambda: tk.AutoEncoderTopK(D, F, 4), TopKSAE,
                            lambda p: tk.AutoEncoderTopK.from_pretrained(p, k=4)),
        "BatchTopKSAE": (lambda: btopk(0.2), JumpReLUSAE, lambda p: btk.BatchTopKSAE.from_pretrained(p, k=4)),
        "BatchTopKSAE-unset": (lambda: btopk(-1.0), ReLUSAE, lambda p: btk.BatchTopKSAE.from_pretrained(p, k=4)),
    }


@pytest.mark.parametrize("name", ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder",
                                  "AutoEncoderTopK", "BatchTopKSAE", "BatchTopKSAE-unset"])
def test_dictionary_learning_folder_matches_their_forward(tmp_path, name):
    make, ours, their_load = _dl_cases()[name]
    ae = make()
    if name not in ("JumpReluAutoEncoder", "BatchTopKSAE", "BatchTopKSAE-unset"):
        _randomise(ae, 4)
    cls = name.split("-")[0]
    _dl_save(tmp_path, ae, {"dict_class": cls, "k": 4, "activation_dim": 12, "dict_size": 36, "lr": 1e-3,
                            "layer": 3, "lm_name": "EleutherAI/pythia-70m-deduped"})
    assert detect_format(tmp_path) == "dictionary_learning"
    got = load_sae(tmp_path)
    theirs = their_load(str(tmp_path / "ae.pt"))  # what their utils.load_dictionary calls for this class
    assert type(got) is ours
    _same_forward(got, theirs, 12, rtol=1e-4)


def test_dictionary_learning_topk_trainer_config(tmp_path):
    """The config.json their TopKTrainer writes (its `.config`), with k read from it."""
    tk = _dl("trainers.top_k")
    trainer = tk.TopKTrainer(steps=2000, activation_dim=12, dict_size=36, k=3, layer=2, lm_name="m", device="cpu")
    _randomise(trainer.ae, 8)
    _dl_save(tmp_path, trainer.ae, trainer.config)
    got = load_sae(tmp_path)
    assert isinstance(got, TopKSAE) and got.k == 3
    x = _x(12)
    with torch.no_grad():
        torch.testing.assert_close(got(x), trainer.ae(x), rtol=1e-4, atol=1e-5)


def test_dictionary_learning_matryoshka_keeps_its_levels(tmp_path):
    """Their MatryoshkaBatchTopKSAE (group_sizes 6, 10, 20 of 36): the same forward as theirs, and its levels, the
    cumulative group sizes, kept through our SAELens save; a state without group_sizes is refused."""
    mbt = _dl("trainers.matryoshka_batch_top_k")
    ae = mbt.MatryoshkaBatchTopKSAE(12, 36, 4, group_sizes=[6, 10, 20])
    _randomise(ae, 9)
    ae.threshold.fill_(0.2)
    _dl_save(tmp_path / "m", ae, {"dict_class": "MatryoshkaBatchTopKSAE", "k": 4, "dict_size": 36})
    got = load_sae(tmp_path / "m")
    assert isinstance(got, JumpReLUSAE) and got.nested_widths == (6, 16, 36)
    _same_forward(got, mbt.MatryoshkaBatchTopKSAE.from_pretrained(str(tmp_path / "m" / "ae.pt")), 12, rtol=1e-4)
    save_saelens(got, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "cfg.json").read_text())["matryoshka_widths"] == [6, 16, 36]
    assert load_sae(tmp_path / "ours").nested_widths == (6, 16, 36)
    torch.save({k: v for k, v in ae.state_dict().items() if k != "group_sizes"}, tmp_path / "m" / "ae.pt")
    with pytest.raises(SAEFormatError, match="without its group_sizes"):
        load_sae(tmp_path / "m")


def _saelens_training_sae(arch: str, d: int, f: int, **kw):
    """One of SAELens' training SAEs with random weights, decoder rows of uneven norm (so a rescale by them
    matters) and, for the BatchTopK family, a trained-looking topk_threshold."""
    import sae_lens as S

    cls, cfg_cls = {"topk": (S.TopKTrainingSAE, S.TopKTrainingSAEConfig),
                    "batchtopk": (S.BatchTopKTrainingSAE, S.BatchTopKTrainingSAEConfig),
                    "matryoshka_batchtopk": (S.MatryoshkaBatchTopKTrainingSAE,
                                             S.MatryoshkaBatchTopKTrainingSAEConfig),
                    "jumprelu": (S.JumpReLUTrainingSAE, S.JumpReLUTrainingSAEConfig)}[arch]
    sae = cls(cfg_cls(d_in=d, d_sae=f, **kw))
    _randomise(sae, 5)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.3, 2.0, f)[:, None])
        if hasattr(sae, "topk_threshold"):
            sae.topk_threshold.fill_(0.4)
        for name in ("threshold", "log_threshold"):
            if hasattr(sae, name) and isinstance(getattr(sae, name), torch.nn.Parameter):
                getattr(sae, name).copy_(getattr(sae, name).abs() if name == "threshold" else
                                         getattr(sae, name).clamp_max(-0.5))
    return sae


@pytest.mark.parametrize("arch,kw,widths", [
    ("matryoshka_batchtopk", {"k": 4, "matryoshka_widths": [8, 16, 32]}, (8, 16, 32)),
    ("matryoshka_batchtopk", {"k": 4, "matryoshka_widths": [8, 32], "rescale_acts_by_decoder_norm": False},
     (8, 32)),
    ("batchtopk", {"k": 4}, None), ("topk", {"k": 4}, None), ("jumprelu", {}, None)])
def test_saelens_training_checkpoint_is_their_inference_sae(tmp_path, arch, kw, widths):
    """A SAELens training checkpoint (`save_model` of a TrainingSAE: architecture batchtopk /
    matryoshka_batchtopk with its scalar topk_threshold, rescale_acts_by_decoder_norm on by default) loads as the
    SAE their own `save_inference_model` turns it into, read back by their `SAE.load_from_disk`; a Matryoshka
    one keeps its levels."""
    from sae_lens import SAE

    theirs = _saelens_training_sae(arch, 6, 32, **kw)
    theirs.save_model(str(tmp_path / "train"))
    assert json.loads((tmp_path / "train" / "cfg.json").read_text())["architecture"] == arch
    theirs.save_inference_model(str(tmp_path / "inf"))
    ref = SAE.load_from_disk(str(tmp_path / "inf"))
    got = load_sae(tmp_path / "train")
    assert got.nested_widths == widths
    _same_forward(got, ref, 6, rtol=1e-4)
    if arch == "topk":  # per-row TopK: their training SAE's own forward is a second reference
        _same_forward(got, theirs, 6, rtol=1e-4)


def test_saelens_jumprelu_checkpoint_with_log_threshold(tmp_path):
    """Older SAELens JumpReLU training checkpoints keep `log_threshold`: loaded as threshold = exp of it, the same
    SAE as the checkpoint with `threshold` itself."""
    theirs = _saelens_training_sae("jumprelu", 6, 32)
    theirs.save_model(str(tmp_path))
    ref = load_sae(tmp_path)
    st = load_file(tmp_path / "sae_weights.safetensors")
    assert "threshold" in st and "log_threshold" not in st
    st["log_threshold"] = st.pop("threshold").log()
    save_file(st, tmp_path / "sae_weights.safetensors")
    got = load_sae(tmp_path)
    torch.testing.assert_close(got.threshold, ref.threshold)
    x = _x(6)
    torch.testing.assert_close(got(x), ref(x))


def test_saelens_training_checkpoint_bad_threshold_and_rescale_refused(tmp_path):
    theirs = _saelens_training_sae("batchtopk", 6, 32, k=4)
    theirs.save_model(str(tmp_path))
    st = load_file(tmp_path / "sae_weights.safetensors")
    save_file({k: v for k, v in st.items() if k != "topk_threshold"}, tmp_path / "sae_weights.safetensors")
    with pytest.raises(SAEFormatError, match="without its topk_threshold"):
        load_sae(tmp_path)
    save_file({**st, "topk_threshold": torch.ones(3)}, tmp_path / "sae_weights.safetensors")
    with pytest.raises(SAEFormatError, match="one scalar"):
        load_sae(tmp_path)
    _pre6_folder(tmp_path, {"architecture": "standard", "rescale_acts_by_decoder_norm": True}, _plain_state(4, 8, 0))
    with pytest.raises(SAEFormatError, match="rescale_acts_by_decoder_norm=true is supported for TopK"):
        load_sae(tmp_path)


@pytest.mark.parametrize("widths,want", [([8, 16], (8, 16, 32)), ([8, 16, 32], (8, 16, 32)),
                                         ([16, 8], "strictly increasing"), ([0, 32], "strictly increasing"),
                                         ([8, 40], "strictly increasing"), (["a"], "not a list of integers"),
                                         ([8.5], "not a list of integers")])
def test_saelens_matryoshka_widths(tmp_path, widths, want):
    """SAELens' matryoshka_widths on a saved SAE: the full width appended when missing (as their trainer does);
    bad lists named."""
    from saesanity.sae import MatryoshkaBatchTopKSAE

    sae = MatryoshkaBatchTopKSAE(6, 32, 4, widths=(8, 16), seed=0)
    sae.threshold.fill_(0.1)  # as training sets it
    save_saelens(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    assert cfg["matryoshka_widths"] == [8, 16, 32] and cfg["architecture"] == "jumprelu"
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "matryoshka_widths": widths}))
    if isinstance(want, str):
        with pytest.raises(SAEFormatError, match=want):
            load_sae(tmp_path)
    else:
        assert load_sae(tmp_path).nested_widths == want


def test_dictionary_learning_backup_and_unknown_class_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    torch.save({"step": 5, "ae": {"bias": torch.zeros(3)}, "norm_factor": 2.0}, tmp_path / "ae.pt")
    with pytest.raises(SAEFormatError, match=r"training backup \(step 5\)"):
        load_sae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "IdentityDict"}}))
    torch.save({"bias": torch.zeros(3)}, tmp_path / "ae.pt")
    with pytest.raises(SAEFormatError, match="dict_class 'IdentityDict'; supported"):
        load_sae(tmp_path)


# ---------------------------------------------------------------- detection, errors, hub names

def test_unknown_folder_lists_every_format(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(SAEFormatError) as e:
        load_sae(tmp_path)
    assert "unknown SAE format" in str(e.value) and all(desc in str(e.value) for desc in FORMATS.values())
    with pytest.raises(SAEFormatError, match="does not exist"):
        load_sae(tmp_path / "nope")
    with pytest.raises(SAEFormatError, match="no SAE found"):
        load_saes(tmp_path)


def test_hub_repo_resolves_through_the_same_loaders(tmp_path, monkeypatch):
    """`hf:` (or a bare owner/name) downloads with huggingface_hub and reads the folder like a local one;
    here the download is a local stand-in with a sparsify multi-seed layout."""
    import huggingface_hub

    coders = {s: _sparsify_coder(8, 24, 3, s) for s in (0, 1)}
    for s, c in coders.items():
        c.save_to_disk(tmp_path / "repo" / "layers.6" / f"seed{s}")
    calls = []

    def fake(repo, allow_patterns=None, **kw):
        calls.append((repo, allow_patterns))
        return str(tmp_path / "repo")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    saes = resolve("hf:EleutherAI/sae-pythia-160m-32k:layers.6")
    assert calls == [("EleutherAI/sae-pythia-160m-32k", "layers.6/*")]
    assert list(saes) == ["seed0", "seed1"]
    assert list(resolve("EleutherAI/sae-pythia-160m-32k")) == ["layers.6/seed0", "layers.6/seed1"]
    x = _x(8)
    with torch.no_grad():
        torch.testing.assert_close(saes["seed1"](x), coders[1](x).sae_out, rtol=1e-5, atol=1e-5)


def test_saelens_release_source_and_bad_sources(tmp_path, monkeypatch):
    import sae_lens

    ours = TopKSAE(8, 24, 3, seed=1)
    save_saelens(ours, tmp_path / "stand-in")
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained",
                        staticmethod(lambda release, sae_id, device="cpu", **kw:
                                     sae_lens.SAE.load_from_disk(str(tmp_path / "stand-in"))))
    got = resolve("sae_lens:gpt2-small-res-jb:blocks.8.hook_resid_pre")
    assert list(got) == ["blocks.8.hook_resid_pre"]
    x = _x(8)
    with torch.no_grad():
        torch.testing.assert_close(got["blocks.8.hook_resid_pre"](x), ours(x), rtol=1e-5, atol=1e-5)
    assert list(resolve(str(tmp_path / "stand-in"))) == ["stand-in"]
    with pytest.raises(SAEFormatError, match="sae_lens:<release>:<sae_id>"):
        resolve("sae_lens:only-release")
    with pytest.raises(SAEFormatError, match="neither an existing folder nor a hub source"):
        resolve(str(tmp_path / "missing" / "deeper"))


# ---------------------------------------------------------------- TransformerLens weight processing (release configs)

def _centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


def _offset_x(d: int, n: int = 64) -> torch.Tensor:
    """Inputs with large per-token means, so centring them changes them a lot."""
    g = torch.Generator().manual_seed(7)
    return _x(d, n) + 3 * torch.randn(n, 1, generator=g)


def _tiny_gpt2():
    """A 3-layer GPT-2 (d_model 24) with random weights, LayerNorm gains and biases, and offsets on the
    embedding and on every block's output biases (so every activation has a non-zero per-token mean)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=24, n_layer=3, n_head=3, n_inner=48,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.5)
            if name.endswith("c_proj.bias"):  # attn and mlp output biases
                p.add_(0.5)
        hf.transformer.wte.weight.add_(1.0)
    return hf


@pytest.mark.parametrize("kwargs", [
    {},
    {"center_writing_weights": True},
    {"fold_ln": True, "center_writing_weights": True, "center_unembed": True, "fold_value_biases": True},
    {"fold_ln": True, "center_unembed": True, "fold_value_biases": True, "refactor_factored_attn_matrices": True},
])
def test_input_transform_is_what_transformer_lens_does_to_activations(tmp_path, kwargs):
    """TransformerLens (HookedTransformer, GPT-2 weights converted by its own convert_gpt2_weights and
    processed by load_and_process_state_dict with `kwargs`) vs our raw-HF hookpoints passed through the
    `transform_input` of an SAE whose release config carries the same `model_from_pretrained_kwargs`:
    equal at every layer and hookpoint kind; and the raw activations differ from the centred ones."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    from saesanity.activations import HOOK_KINDS, run_to_hookpoints
    from saesanity.models import LoadedModel

    hf = _tiny_gpt2()
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    hooks = [f"{k}.{layer}" for k in HOOK_KINDS for layer in range(3)]
    raw = run_to_hookpoints(LoadedModel(hf, None, "tiny-gpt2", "trained", 0, "tiny"), ids, hooks)

    cfg = HookedTransformerConfig(d_model=24, d_head=8, n_heads=3, n_layers=3, n_ctx=16, d_vocab=64, d_mlp=48,
                                  act_fn="gelu_new", normalization_type="LN", original_architecture="GPT2LMHeadModel",
                                  positional_embedding_type="standard", default_prepend_bos=False)
    tl = HookedTransformer(cfg)
    flags = {f: bool(kwargs.get(f)) for f in ("fold_ln", "center_writing_weights", "center_unembed",
                                              "fold_value_biases", "refactor_factored_attn_matrices")}
    tl.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), **flags)
    _, cache = tl.run_with_cache(ids)

    _pre6_folder(tmp_path, {"model_name": "gpt2", "model_from_pretrained_kwargs": kwargs}, _plain_state(24, 8, 0))
    sae = load_sae(tmp_path)
    assert sae.input_transform == ("center" if kwargs.get("center_writing_weights") else "none")
    for h in hooks:
        kind, layer = h.split(".")
        assert float(raw[h].mean(-1).abs().min()) > 0.2, h  # centring is not a no-op here
        torch.testing.assert_close(sae.transform_input(raw[h]), cache[f"blocks.{layer}.hook_{kind}"],
                                   rtol=1e-5, atol=2e-5, msg=h)


def _with_tl_metadata(theirs, hook="blocks.8.hook_resid_pre", model="gpt2-small", **kwargs):
    from sae_lens.saes.sae import SAEMetadata

    theirs.cfg.metadata = SAEMetadata(model_name=model, hook_name=hook,
                                      model_from_pretrained_kwargs=kwargs or {"center_writing_weights": True})
    return theirs


@pytest.mark.parametrize("arch,kw", [("standard", {}), ("topk", {"k": 5}), ("gated", {}), ("jumprelu", {}),
                                     ("jumprelu", {"apply_b_dec_to_input": False}),
                                     ("gated", {"apply_b_dec_to_input": False})])
def test_center_writing_weights_folded_into_the_encoder(tmp_path, arch, kw):
    """A v6 SAELens folder whose metadata says center_writing_weights: ours encodes a raw x as theirs encodes
    centre(x), reconstructs centre(x) (its transform_input), and keeps both through save_saelens."""
    theirs = _with_tl_metadata(_saelens_sae(arch, 12, 40, **kw))
    theirs.save_model(str(tmp_path / "theirs"))
    got = load_sae(tmp_path / "theirs")
    assert (got.input_transform, got.hookpoint) == ("center", "resid_pre.8")
    x = _offset_x(12)
    with torch.no_grad():
        z = theirs.encode(_centre(x))
        torch.testing.assert_close(got.encode(x), z, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.transform_input(x), _centre(x))
        torch.testing.assert_close(got.decode(z), theirs.decode(z), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(theirs.encode(x), z, atol=1e-2)  # unfolded, the raw x would get other codes
        save_saelens(got, tmp_path / "ours")
        again = load_sae(tmp_path / "ours")
        assert (again.input_transform, again.hookpoint) == ("center", "resid_pre.8")
        torch.testing.assert_close(again.encode(x), z, rtol=1e-4, atol=1e-4)


@pytest.fixture
def jb_release(tmp_path, monkeypatch):
    """Stand-ins for `gpt2-small-res-jb-feature-splitting` `blocks.8.hook_resid_pre_{30,60}`: pre-6.0 folders as
    on the hub, with the release's config override applied (SAELens's pretrained_saes.yaml:
    model_from_pretrained_kwargs: {center_writing_weights: true}); `from_pretrained` reads them from disk."""
    import sae_lens

    for f in (30, 60):
        (tmp_path / f"blocks.8.hook_resid_pre_{f}").mkdir()
        _pre6_folder(tmp_path / f"blocks.8.hook_resid_pre_{f}",
                     {"model_from_pretrained_kwargs": {"center_writing_weights": True}}, _plain_state(12, f, f))
    calls = []

    def fake(release, sae_id, device="cpu", **kw):
        calls.append((release, sae_id))
        return sae_lens.SAE.load_from_disk(str(tmp_path / sae_id))

    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", staticmethod(fake))
    return tmp_path, calls


def test_release_stitching_is_measured_on_centred_activations(jb_release):
    """load_release carries the transform; Stitcher measures MSE/FVU against centre(x) with codes of centre(x).
    Forgetting the transform (raw target, or raw target and raw encoding) gives other numbers."""
    from saesanity import stitching as ST
    from saesanity.sae import load_release
    from sae_lens import SAE

    root, calls = jb_release
    small = load_release("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_30")
    large = load_release("gpt2-small-res-jb-feature-splitting", "blocks.8.hook_resid_pre_60")
    assert calls == [("gpt2-small-res-jb-feature-splitting", f"blocks.8.hook_resid_pre_{f}") for f in (30, 60)]
    assert small.input_transform == large.input_transform == "center"
    theirs = {f: SAE.load_from_disk(str(root / f"blocks.8.hook_resid_pre_{f}")) for f in (30, 60)}
    acts = _offset_x(12, 500)
    st = ST.Stitcher(small, large, acts.numpy())
    xc = _centre(acts)
    with torch.no_grad():
        mse = float((xc - theirs[30](xc)).pow(2).sum(1).mean())
        large_mse = float((xc - theirs[60](xc)).pow(2).sum(1).mean())
        forgot_target = float((acts - theirs[30](xc)).pow(2).sum(1).mean())
        forgot_all = float((acts - theirs[30](acts)).pow(2).sum(1).mean())
    got = st.evaluate(np.arange(30), np.zeros(0, int))
    assert got["mse"] == pytest.approx(mse, rel=1e-4)
    assert got["fvu"] == pytest.approx(mse / float((xc - xc.mean(0)).pow(2).sum(1).mean()), rel=1e-4)
    assert st.large_mse == pytest.approx(large_mse, rel=1e-4)
    assert abs(forgot_target - mse) > 0.5 * mse and abs(forgot_all - mse) > 0.5 * mse
    with pytest.raises(ValueError, match="input_transform 'center' vs 'none'"):
        ST.Stitcher(small, ReLUSAE(12, 60, seed=0), acts.numpy())


def test_release_family_hookpoint_must_match(jb_release):
    from types import SimpleNamespace

    from saesanity import stitching as ST

    P = SimpleNamespace(release="gpt2-small-res-jb-feature-splitting", release_id="blocks.8.hook_resid_pre_{size}",
                        sizes=[30, 60], hookpoint="resid_pre.8")
    fam = ST.size_family(P)
    assert [(f.sae.d_sae, f.sae.input_transform, f.sae.hookpoint) for f in fam] == \
        [(30, "center", "resid_pre.8"), (60, "center", "resid_pre.8")]
    with pytest.raises(ValueError, match=r"trained at resid_pre\.8, but hookpoint='resid_post\.8'"):
        ST.size_family(SimpleNamespace(**{**vars(P), "hookpoint": "resid_post.8"}))


@pytest.mark.parametrize("extra,expect", [
    ({"model_from_pretrained_kwargs": {"center_writing_weights": False}}, "none"),
    ({"model_from_pretrained_kwargs": {"fold_ln": True, "center_unembed": True, "fold_value_biases": True}}, "none"),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True, "n_devices": 1}}, "center"),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True}, "hook_point": "blocks.3.hook_mlp_out"},
     "center"),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True}, "hook_point": "blocks.8.attn.hook_z"},
     "center_writing_weights=true at hook 'blocks.8.attn.hook_z' is not supported"),
    ({"model_from_pretrained_kwargs": {"fold_value_biases": True}, "hook_point": "blocks.8.attn.hook_z"},
     "fold_value_biases=true at hook 'blocks.8.attn.hook_z' is not supported"),
    ({"model_from_pretrained_kwargs": {"center_writing_weights": True}, "model_name": "meta-llama/Llama-3.2-1B"},
     "center_writing_weights=true at hook 'blocks.8.hook_resid_pre' for model 'meta-llama/Llama-3.2-1B'"),
    ({"model_from_pretrained_kwargs": {"first_n_layers": 9}}, r"first_n_layers=9 \(hook 'blocks.8.hook_resid_pre'\)"),
])
def test_model_from_pretrained_kwargs_applied_or_refused(tmp_path, extra, expect):
    _pre6_folder(tmp_path, extra, _plain_state(6, 10, 0))
    if expect in ("none", "center"):
        assert load_sae(tmp_path).input_transform == expect
    else:
        with pytest.raises(SAEFormatError, match=expect):
            load_sae(tmp_path)
