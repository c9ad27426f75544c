"""The paper-mini stand-ins: tiny random models of the papers' architectures (`standin:<hub name>`, with
Pythia's step-0 checkpoint)."""

from __future__ import annotations

import pytest
import torch

from saesanity import models
from saesanity.activations import parse_hookpoint, run_to_hookpoints
from saesanity.models import ModelError, load_model

# the real models' depth and class (their hub configs); the stand-ins keep both and shrink the width
REAL = {"EleutherAI/pythia-160m": ("GPTNeoXForCausalLM", 12, False),
        "EleutherAI/pythia-70m": ("GPTNeoXForCausalLM", 6, False), "gpt2": ("GPT2LMHeadModel", 12, True)}


def _same_weights(a, b) -> bool:
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------- models

@pytest.mark.parametrize("name", sorted(models.STANDINS))
def test_standin_has_the_real_architecture(name, iso_cache):
    cls, depth, tied = REAL[name]
    lm = load_model(models.STANDIN_PREFIX + name)
    assert type(lm.model).__name__ == cls and lm.n_layers == depth and lm.d_model == 64
    out_emb = lm.model.get_output_embeddings().weight
    assert (out_emb is lm.model.get_input_embeddings().weight) == tied
    assert lm.tokenizer_id == models.SMOLLM2 and lm.tokenizer.eos_token_id is not None  # SmolLM2's tokenizer
    assert models.tokenizer_id(models.STANDIN_PREFIX + name) == models.SMOLLM2
    if cls.startswith("GPTNeoX"):  # Pythia's layout: parallel residual, a quarter of each head rotary
        cfg = lm.model.config
        assert cfg.use_parallel_residual and cfg.rope_parameters["partial_rotary_factor"] == 0.25


@pytest.mark.parametrize("name", sorted(models.STEP0_STANDINS))
def test_pythia_standin_step0_is_another_initialisation(name, iso_cache):
    spec = models.STANDIN_PREFIX + name
    main, step0 = load_model(spec), load_model(spec, "step0")
    assert _same_weights(step0, load_model(spec + "@step0"))  # the variant is the step-0 revision, as on the hub
    assert not _same_weights(main, step0)
    cfg = [{k: v for k, v in m.model.config.to_dict().items() if k != "_name_or_path"} for m in (main, step0)]
    assert cfg[0] == cfg[1]
    assert step0.variant == "step0" and step0.tokenizer_id == main.tokenizer_id
    assert models.step0_source(spec) == (str(models._standin(name) / "step0"), None)


def test_step0_sources_and_errors(iso_cache, tiny_llama_dir):
    assert models.step0_source("EleutherAI/pythia-70m") == ("EleutherAI/pythia-70m", "step0")  # the hub revision
    with pytest.raises(ModelError, match="no step-0 checkpoint"):
        load_model("standin:gpt2", "step0")  # GPT-2 publishes none, so its stand-in has none
    with pytest.raises(ModelError, match="no step-0 checkpoint"):
        models.step0_source(str(tiny_llama_dir))
    with pytest.raises(ModelError, match="no stand-in of 'EleutherAI/pythia-1b'"):
        models.resolve("standin:EleutherAI/pythia-1b")
    with pytest.raises(ModelError, match="revision 'step0'"):
        models.resolve("standin:EleutherAI/pythia-160m@step1000")
    with pytest.raises(ModelError, match="revision 'step0'"):
        models.resolve("standin:gpt2@step0")


def test_paper_hookpoints_and_context_run_on_the_standins(iso_cache):
    """The paper profiles' hookpoints exist on the stand-ins, and Pythia's seq_len 2049 (one more than its
    2,048-token context: the first position is dropped) runs through the rotary GPT-NeoX."""
    pythia = load_model("standin:EleutherAI/pythia-160m")
    ids = torch.randint(0, len(pythia.tokenizer), (1, 2049))
    out = run_to_hookpoints(pythia, ids, ["mlp_out.6", "resid_post.11", "resid_pre.0"])
    assert out["mlp_out.6"].shape == (1, 2049, 64) and torch.isfinite(out["resid_post.11"]).all()
    gpt2 = load_model("standin:gpt2")
    assert run_to_hookpoints(gpt2, ids[:, :128], ["resid_pre.8"])["resid_pre.8"].shape == (1, 128, 64)
    for layer in range(6):
        parse_hookpoint(f"resid_post.{layer}", load_model("standin:EleutherAI/pythia-70m").n_layers)
