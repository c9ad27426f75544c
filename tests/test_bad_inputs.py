"""Every bad input is a one-line error naming the value (issue 17): one table for the CLI (exit code 2, a single
line on stderr, before any compute) and one for the library (its own error class, a single-line message).

Each row is the input and a regular expression the message must match; a row whose input is accepted, raises
another error class, prints a traceback or a multi-line message fails."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from saesanity import activations, cli, corpus, fits, matching, models, params
from saesanity.activations import ActivationError, HookpointError
from saesanity.corpus import CorpusError
from saesanity.fits import FitError
from saesanity.matching import MatchingError
from saesanity.models import ModelError
from saesanity.params import ParamsError
from saesanity.sae import TopKSAE
from saesanity.sae.io import SAEFormatError, load_sae, save_saelens

FIG1 = "paulo_fig1_matched_cosines"


def _sae(tmp, *, cfg=None, state=None, raw_cfg=None, raw_weights=None, name="sae"):
    """A valid 8-input, 16-latent TopK SAE folder in SAELens format, then tampered with: `cfg(dict)` / `state(dict)`
    edit the parsed config / tensors in place; `raw_cfg` / `raw_weights(bytes) -> bytes` replace the files."""
    folder = save_saelens(TopKSAE(d_in=8, d_sae=16, k=2, seed=0), tmp / name)
    if cfg or raw_cfg is not None:
        c = json.loads((folder / "cfg.json").read_text())
        cfg and cfg(c)
        (folder / "cfg.json").write_text(raw_cfg if raw_cfg is not None else json.dumps(c))
    if state:
        st = load_file(folder / "sae_weights.safetensors")
        state(st)
        save_file({k: v.contiguous() for k, v in st.items()}, folder / "sae_weights.safetensors")
    if raw_weights:
        w = folder / "sae_weights.safetensors"
        w.write_bytes(raw_weights(w.read_bytes()))
    return folder


def _set(**kv):
    return lambda d: d.update(kv)


# ---------------------------------------------------------------- `saesanity report`: exit 2, one line, no compute
SAE_FILES = {  # --sae folders the CLI must refuse (built in tmp_path by `_sae`)
    "cfg-list": dict(raw_cfg="[1, 2]"),
    "truncated": dict(raw_weights=lambda b: b[:100]),
    "nan": dict(state=lambda st: st["W_enc"].__setitem__((0, 0), float("nan"))),
    "b_dec-1": dict(state=_set(b_dec=torch.zeros(1))),
}

CLI_CASES = [
    (["--hookpoint", "mlp_out.02"], "hookpoint 'mlp_out.02' is not valid"),
    (["--hookpoint", "mlp.2"], "hookpoint 'mlp.2' is not valid"),
    (["--hookpoint", "mlp_out.99"], "hookpoint 'mlp_out.99' does not exist; smollm2-tiny-random has layers 0–3"),
    (["--d-sae", "0"], "d-sae=0, k=8: need 0 < k < d-sae"),  # smoke k
    (["--k", "0"], "k=0: must be >= 1"),
    (["--n-eval-tokens", "0"], "n-eval-tokens=0: must be >= 1"),
    (["--n-tokens", "0"], r"n_tokens=0 is smaller than one SAE batch \(1024\)"),
    (["--seq-len", "1"], "seq-len=1: must be >= 2"),
    (["--model-dtype", "fp8"], "model-dtype='fp8'; valid"),
    (["--device", "tpu"], "device='tpu'; valid: cpu, cuda, cuda:<n>, mps"),
    (["--threshold", "1.5"], r"threshold=1.5: must lie in \(0, 1\)"),
    (["--n-boot", "0"], "n_boot=0: need at least 2 resamples"),
    (["--profile", "fast"], r"profile 'fast'; valid: \['default', 'smoke'\]"),
    (["--variants", "trained", "shuffled"], r"variants \['shuffled'\]: valid"),
    (["--train-seeds", "-1"], "train_seeds=-1: must be >= 0"),
    (["--train-seeds", "0"], "nothing to report on: give --sae, or --train-seeds >= 1"),
    (["--model", "a/b/c"], "model 'a/b/c': hub name 'a/b/c' is not"),
    (["--model", "./no-such-model"], r"model './no-such-model': no such local folder"),
    (["--corpus", "debian:nope"], r"corpus 'debian:nope': unknown source\(s\) \['nope'\]"),
    (["--corpus", "hf:org/ds?colour=red"], "unknown option 'colour'"),
    (["--explainer", "vibes"], "explainer='vibes'; valid: llm, top-tokens"),
    (["--explainer", "llm", "--llm-backend", "openai-compatible"], "needs --api-base"),
    (["--explainer", "llm", "--llm-backend", "gpt"], "llm-backend='gpt'; valid"),
    (["--explainer", "top-tokens", "--scorers", "vibes"], r"scorers \['vibes'\]: valid"),
    (["--n-interp-latents", "0"], "n-interp-latents=0: must be >= 1"),
    (["--sae", "{tmp}/nowhere/x"], "'{tmp}/nowhere/x' is neither an existing folder nor a hub source"),
    (["--sae", "sae_lens:foo"], "'sae_lens:foo': a SAELens source is sae_lens:<release>:<sae_id>"),
    (["--sae", "someone/no-such-repo"], "LocalEntryNotFoundError"),  # tests run with HF_HUB_OFFLINE=1
    (["--sae", "{tmp}/cfg-list"], "{tmp}/cfg-list/cfg.json: expected a JSON object of settings, got a list"),
    (["--sae", "{tmp}/truncated"], "{tmp}/truncated/sae_weights.safetensors: not a readable safetensors file"),
    (["--sae", "{tmp}/nan"], r"{tmp}/nan: W_enc holds 1 NaN/inf value\(s\)"),
    (["--sae", "{tmp}/b_dec-1"], r"{tmp}/b_dec-1: b_dec has shape \[1\]"),
]
if not torch.cuda.is_available():
    CLI_CASES.append((["--device", "cuda"], r"device='cuda', but this torch \(.*\) sees no CUDA GPU"))


@pytest.mark.parametrize("extra, message", CLI_CASES, ids=[" ".join(e) for e, _ in CLI_CASES])
def test_a_bad_report_input_is_one_line_naming_it_before_any_compute(iso_cache, tmp_path, capsys, monkeypatch,
                                                                      extra, message):
    from saesanity import runs

    def no_compute(*a, **k):
        if "--hookpoint" not in extra:  # the layer range is known once the model is loaded, for its activations
            pytest.fail("started collecting activations before refusing the input")
        return real(*a, **k)

    real = runs.data_for
    monkeypatch.setattr(runs, "data_for", no_compute)
    for name, how in SAE_FILES.items():
        _sae(tmp_path, name=name, **how)
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    base = ["report", "--profile", "smoke", "--hookpoint", "mlp_out.2", "--out", str(tmp_path / "r"), "--no-progress"]
    assert cli.main([*base, *extra]) == 2
    err = capsys.readouterr().err
    assert re.search(message.replace("{tmp}", re.escape(str(tmp_path))), err), err
    assert err.count("\n") == 1 and err.startswith("saesanity report: "), err


def test_the_params_cli_refuses_a_bad_stem_or_profile_in_one_line(capsys):
    assert params.main(["no_such_notebook", "smoke"]) == 2
    assert "no parameter file" in capsys.readouterr().err
    assert params.main([FIG1, "fast"]) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'fast'" in err and err.count("\n") == 1


# ---------------------------------------------------------------- the library: its error class, one line
def _collect(hook="mlp_out.0", **kw):
    spec = dict(model="smollm2-tiny-random", variant="trained", corpus="debian", n_tokens=100, seq_len=16, seed=0)
    return lambda tmp: activations.collect(activations.ActivationSpec(**{**spec, **kw}), [hook], progress=False)


def _load(**how):
    return lambda tmp: load_sae(_sae(tmp, **how))


def _sae_pair(a, b):
    return lambda tmp: matching.match(TopKSAE(**a, seed=0), TopKSAE(**b, seed=1))


LIB_CASES = [
    # SAE files
    ("cfg not JSON", _load(raw_cfg="{bad"), SAEFormatError, r"cfg.json: not valid JSON \(Expecting property name"),
    ("cfg a list", _load(raw_cfg="[1]"), SAEFormatError, "cfg.json: expected a JSON object of settings, got a list"),
    ("cfg d_sae a string", _load(cfg=_set(d_sae="big")), SAEFormatError,
     r"the config says d_sae='big' but W_enc has shape \[8, 16\]"),
    ("cfg d_in wrong", _load(cfg=_set(d_in=9)), SAEFormatError, r"the config says d_in=9 but W_enc has shape \[8, 16\]"),
    ("cfg k > d_sae", _load(cfg=_set(k=99)), SAEFormatError, "k=99 must satisfy 0 < k < d_sae=16"),
    ("cfg architecture", _load(cfg=_set(architecture="magic")), SAEFormatError, "architecture 'magic'; supported"),
    ("cfg normalize", _load(cfg=_set(normalize_activations="layer_norm")), SAEFormatError,
     "normalize_activations='layer_norm' is not supported"),
    ("weights truncated", _load(raw_weights=lambda b: b[:100]), SAEFormatError,
     r"sae_weights.safetensors: not a readable safetensors file \(100 bytes"),
    ("weights empty", _load(raw_weights=lambda b: b""), SAEFormatError, r"not a readable safetensors file \(0 bytes"),
    ("weights lack W_enc", _load(state=lambda st: st.pop("W_enc")), SAEFormatError, "weights lack 'W_enc' for a topk SAE"),
    ("b_enc wrong length", _load(state=_set(b_enc=torch.zeros(15))), SAEFormatError,
     r"b_enc has shape \[15\]; a 8-input, 16-latent SAE needs \[16\]"),
    ("b_enc scalar", _load(state=_set(b_enc=torch.tensor(0.5))), SAEFormatError, r"b_enc has shape \[\]"),
    ("b_dec [1]", _load(state=_set(b_dec=torch.zeros(1))), SAEFormatError, r"b_dec has shape \[1\]"),
    ("W_dec transposed", _load(state=lambda st: st.update(W_dec=st["W_dec"].T)), SAEFormatError,
     r"W_dec has shape \(8, 16\); W_enc \[8, 16\] needs \(16, 8\)"),
    ("W_enc integer", _load(state=lambda st: st.update(W_enc=st["W_enc"].to(torch.int32))), SAEFormatError,
     "W_enc holds int32 values; SAE weights are floating point"),
    ("W_enc NaN", _load(state=lambda st: st["W_enc"].__setitem__((0, 3), float("nan"))), SAEFormatError,
     r"W_enc holds 1 NaN/inf value\(s\)"),
    ("W_dec inf", _load(state=lambda st: st["W_dec"].__setitem__((2, 1), float("inf"))), SAEFormatError,
     r"W_dec holds 1 NaN/inf value\(s\)"),
    ("no weights file", lambda tmp: load_sae((lambda f: (f / "sae_weights.safetensors").unlink() or f)(_sae(tmp))),
     SAEFormatError, r"unknown SAE format \(files \['cfg.json'\]\)"),
    ("no folder", lambda tmp: load_sae(tmp / "nowhere"), SAEFormatError, "SAE folder .*nowhere does not exist"),
    ("format name", lambda tmp: load_sae(_sae(tmp), format="bogus"), SAEFormatError, "format 'bogus'; valid"),
    # parameters
    ("stem", lambda tmp: params.load("nope"), ParamsError, "no parameter file .*nope.yaml"),
    ("profile", lambda tmp: params.load(FIG1, "fast"), ParamsError, "unknown profile 'fast'"),
    ("unknown name", lambda tmp: params.load(FIG1, d_sea=64), ParamsError, r"unknown parameter\(s\) \['d_sea'\]"),
    ("str for int", lambda tmp: params.load(FIG1, d_sae="big"), ParamsError, "d_sae='big': expected int, got str"),
    ("float for int", lambda tmp: params.load(FIG1, d_sae=64.5), ParamsError, "d_sae=64.5: expected int, got float"),
    ("bool for int", lambda tmp: params.load(FIG1, d_sae=True), ParamsError, "d_sae=True: expected a number, got a bool"),
    ("k >= d_sae", lambda tmp: params.load(FIG1, k=10**6), ParamsError, "k=1000000: must satisfy 0 < k < d_sae"),
    ("one seed", lambda tmp: params.load(FIG1, seeds=[0]), ParamsError, r"seeds=\[0\]: need at least two distinct"),
    ("seed twice", lambda tmp: params.load(FIG1, seeds=[0, 0]), ParamsError, r"seeds=\[0, 0\]: need at least two"),
    ("threshold", lambda tmp: params.load(FIG1, threshold=2.0), ParamsError, r"threshold=2.0: must lie in \(0, 1\)"),
    ("variant", lambda tmp: params.load(FIG1, variant="fancy"), ParamsError, "variant='fancy'; valid"),
    ("hookpoint", lambda tmp: params.load(FIG1, hookpoint="mlp.3"), ParamsError, "hookpoint 'mlp.3' is not valid"),
    ("hookpoint zero-padded", lambda tmp: params.load(FIG1, hookpoint="mlp_out.03"), ParamsError,
     "hookpoint 'mlp_out.03' is not valid"),
    ("model_dtype", lambda tmp: params.load(FIG1, model_dtype="fp8"), ParamsError, "model_dtype='fp8'; valid"),
    ("corpus spec", lambda tmp: params.load(FIG1, corpus="debian:nope"), ParamsError,
     r"corpus 'debian:nope': unknown source\(s\)"),
    ("model spec", lambda tmp: params.load(FIG1, model="a/b/c"), ParamsError, "model 'a/b/c': hub name"),
    ("n_tokens", lambda tmp: params.load(FIG1, n_tokens=10), ParamsError, "n_tokens=10 is smaller than one SAE batch"),
    ("seq_len", lambda tmp: params.load(FIG1, seq_len=1), ParamsError, "seq_len=1 must be >= 2"),
    ("n_eval_tokens", lambda tmp: params.load(FIG1, n_eval_tokens=0), ParamsError, "n_eval_tokens=0 >= 1"),
    ("model_batch_size", lambda tmp: params.load(FIG1, model_batch_size=0), ParamsError, "model_batch_size=0 must be"),
    ("device", lambda tmp: params.load(FIG1, device="tpu"), ParamsError, "device='tpu'; valid"),
    ("lr", lambda tmp: params.load(FIG1, lr=-1e-3), ParamsError, "lr=-0.001 must be > 0"),
    ("auxk_alpha", lambda tmp: params.load(FIG1, auxk_alpha=-1.0), ParamsError, "auxk_alpha=-1.0 >= 0"),
    ("trainer", lambda tmp: params.load(FIG1, trainer="magic"), ParamsError, "trainer='magic'; valid"),
    ("epochs", lambda tmp: params.load(FIG1, epochs=0), ParamsError, "epochs=0: must be >= 1"),
    ("epochs streamed", lambda tmp: params.load(FIG1, epochs=2, activations="streamed"), ParamsError,
     r"epochs=2 passes over cached activations: needs activations=cached and trainer=ours \(got streamed, ours\)"),
    ("recipe", lambda tmp: params.load(FIG1, trainer="sparsify", sparsify_recipe="nope"), ParamsError,
     "sparsify_recipe='nope'; valid"),
    ("no layers", lambda tmp: params.load("paulo_fig4_overlap_vs_layer_position_arch", layers=[]), ParamsError,
     r"layers=\[\]: need non-negative layer indices"),
    ("architecture", lambda tmp: params.load("paulo_fig4_overlap_vs_layer_position_arch",
                                             architectures=["topk", "magic"]), ParamsError, "'magic'\\]; valid"),
    ("train_tokens", lambda tmp: params.load("paulo_fig5_overlap_vs_size_k_tokens", train_tokens=[10**9]),
     ParamsError, r"train_tokens \[1000000000\] must lie in"),
    ("toy features", lambda tmp: params.load("heap_toy_models", n_features=0), ParamsError, "n_features=0: need >= 2"),
    # corpus and model specs
    ("debian source", lambda tmp: corpus.parse_corpus("debian:nope"), CorpusError, r"unknown source\(s\) \['nope'\]"),
    ("hf empty", lambda tmp: corpus.parse_corpus("hf:"), CorpusError, "no dataset, folder or file after 'hf:'"),
    ("corpus kind", lambda tmp: corpus.parse_corpus("xyz:foo"), CorpusError, "corpus 'xyz:foo': expected 'debian'"),
    ("hf option", lambda tmp: corpus.parse_corpus("hf:org/ds?colour=red"), CorpusError, "unknown option 'colour'"),
    ("hf option twice", lambda tmp: corpus.parse_corpus("hf:org/ds?split=a&split=b"), CorpusError,
     "option split= given twice"),
    ("hf folder", lambda tmp: corpus.parse_corpus(f"hf:{tmp}/nowhere"), CorpusError, "no such local folder or file"),
    ("hf revision", lambda tmp: corpus.parse_corpus("hf:org/ds@"), CorpusError, "revision '' after '@' is empty"),
    ("corpus stand-in", lambda tmp: corpus.parse_corpus("standin:nope"), CorpusError, "no stand-in 'nope'"),
    ("model empty", lambda tmp: models.resolve(""), ModelError, "model '': empty"),
    ("model whitespace", lambda tmp: models.resolve("gpt2 "), ModelError, "model 'gpt2 ': contains whitespace"),
    ("model hub name", lambda tmp: models.resolve("a/b/c"), ModelError, "hub name 'a/b/c' is not"),
    ("model folder", lambda tmp: models.resolve("./no-such-model"), ModelError, "model './no-such-model': no such"),
    ("model stand-in", lambda tmp: models.resolve("standin:nope/x"), ModelError, "no stand-in of 'nope/x'"),
    ("stand-in revision", lambda tmp: models.resolve("standin:gpt2@step0"), ModelError, "a stand-in has revision"),
    # hookpoints and activations
    ("hookpoint kind", lambda tmp: activations.parse_hookpoint("mlp.2"), HookpointError, "hookpoint 'mlp.2' is not"),
    ("hookpoint layer sign", lambda tmp: activations.parse_hookpoint("resid_pre.-1"), HookpointError,
     "hookpoint 'resid_pre.-1' is not valid"),
    ("hookpoint empty", lambda tmp: activations.parse_hookpoint(""), HookpointError, "hookpoint '' is not valid"),
    ("layer out of range", _collect(hook="mlp_out.99"), HookpointError,
     "hookpoint 'mlp_out.99' does not exist; smollm2-tiny-random has layers 0–3"),
    ("collect variant", _collect(variant="fancy"), ModelError, "unknown variant 'fancy'; valid"),
    ("collect split", _collect(split="val"), (ActivationError, CorpusError), "split 'val'; valid"),
    ("collect dtype", _collect(model_dtype="fp8"), ModelError, "dtype 'fp8'; valid"),
    # matching and fits
    ("match widths", _sae_pair(dict(d_in=8, d_sae=16, k=2), dict(d_in=9, d_sae=16, k=2)), MatchingError,
     "cannot match SAEs of different d_model: 8 vs 9"),
    ("match method", lambda tmp: matching.match(TopKSAE(8, 16, 2, seed=0), TopKSAE(8, 16, 2, seed=1), method="magic"),
     MatchingError, "method 'magic'; valid"),
    ("fit name", lambda tmp: fits.fit_model("cubic", [2, 3, 4, 5], [0.5, 0.4, 0.3, 0.2]), FitError,
     "unknown model 'cubic'"),
    ("fit points", lambda tmp: fits.fit_model("power_offset", [2, 3], [0.5, 0.4]), FitError,
     "needs more than 3 points, got 2"),
    ("fit lengths", lambda tmp: fits.fit_model("power", [2, 3, 4, 5], [0.5, 0.4, 0.3]), FitError,
     r"got \(4,\) and \(3,\)"),
    ("fit NaN", lambda tmp: fits.fit_model("power_offset", [2, 3, 4, 5], [0.5, np.nan, 0.3, 0.2]), FitError,
     r"y holds 1 and N 0 NaN/inf value\(s\)"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in LIB_CASES], ids=[c[0] for c in LIB_CASES])
def test_a_bad_library_input_is_its_error_in_one_line_naming_the_value(iso_cache, tmp_path, call, error, message):
    with pytest.raises(error) as caught:
        call(tmp_path)
    text = str(caught.value)
    assert re.search(message, text), text
    assert "\n" not in text, text
