import pytest
import torch

from saesanity import models
from saesanity.models import GaussianEmbedding, ModelError, load_model


def _params(m):
    return dict(m.named_parameters())


@pytest.fixture(scope="module")
def trained(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), "trained")


def test_rerandomized_excl_emb_keeps_only_embeddings(tiny_llama_dir, trained):
    rr = load_model(str(tiny_llama_dir), "rerandomized_excl_emb", seed=1)
    p0, p1 = _params(trained.model), _params(rr.model)
    emb = "model.embed_tokens.weight"
    assert torch.equal(p0[emb], p1[emb])
    assert rr.model.get_output_embeddings().weight is rr.model.get_input_embeddings().weight  # tie kept
    for name, t in p0.items():
        if name == emb:
            continue
        if t.numel() < 2 or t.std() == 0:  # N(mean, 0) is the constant itself (e.g. fresh RMSNorm weights)
            assert torch.equal(t, p1[name])
            continue
        assert not torch.equal(t, p1[name]), name
        assert p1[name].mean().item() == pytest.approx(t.mean().item(), abs=4 * t.std().item() / t.numel() ** 0.5 + 1e-6)
        assert p1[name].std().item() == pytest.approx(t.std().item(), rel=0.25, abs=1e-6), name


def test_rerandomized_excl_emb_untied_keeps_unembedding(tiny_neox_dir):
    t = load_model(str(tiny_neox_dir), "trained")
    rr = load_model(str(tiny_neox_dir), "rerandomized_excl_emb", seed=0)
    assert torch.equal(t.model.get_input_embeddings().weight, rr.model.get_input_embeddings().weight)
    assert torch.equal(t.model.get_output_embeddings().weight, rr.model.get_output_embeddings().weight)
    ri = load_model(str(tiny_neox_dir), "rerandomized_incl_emb", seed=0)
    assert not torch.equal(t.model.get_input_embeddings().weight, ri.model.get_input_embeddings().weight)
    assert not torch.equal(t.model.get_output_embeddings().weight, ri.model.get_output_embeddings().weight)


def test_variants_deterministic_under_seed(tiny_llama_dir):
    for variant in ("rerandomized_incl_emb", "init"):
        a, b = (_params(load_model(str(tiny_llama_dir), variant, seed=s).model) for s in (5, 5))
        c = _params(load_model(str(tiny_llama_dir), variant, seed=6).model)
        assert all(torch.equal(a[n], b[n]) for n in a)
        assert any(not torch.equal(a[n], c[n]) for n in a)


def test_init_differs_from_trained(tiny_llama_dir, trained):
    init = load_model(str(tiny_llama_dir), "init", seed=1)  # seed 0 rebuilds the saved model exactly
    assert any(not torch.equal(v, _params(init.model)[n]) for n, v in _params(trained.model).items())


def test_control_feeds_fresh_standard_gaussian_per_call(tiny_llama_dir):
    c = load_model(str(tiny_llama_dir), "control", seed=3)
    emb = c.model.get_input_embeddings()
    assert isinstance(emb, GaussianEmbedding)
    ids = torch.zeros(4, 50, dtype=torch.long)  # same token everywhere
    e1, e2 = emb(ids), emb(ids)
    assert not torch.equal(e1, e2) and not torch.equal(e1[0, 0], e1[0, 1])
    assert abs(e1.mean().item()) < 0.05 and e1.std().item() == pytest.approx(1.0, abs=0.05)
    emb.call_index = 0
    assert torch.equal(emb(ids), e1)  # seeded by (seed, call index)


def test_unknown_variant_and_step0_errors(tiny_llama_dir):
    with pytest.raises(ModelError, match="unknown variant 'random'"):
        load_model(str(tiny_llama_dir), "random")
    with pytest.raises(ModelError, match="no step-0 checkpoint"):
        load_model(str(tiny_llama_dir), "step0")
    with pytest.raises(ModelError, match="expected"):
        models.resolve("not/a/model")  # bare names such as "gpt2" are hub models; three parts are not


def test_hub_spec_passes_revision(monkeypatch, tiny_neox_dir):
    """`org/name@rev` and the step0 variant reach from_pretrained with the revision (no network)."""
    calls = []
    real = models._from_pretrained

    def fake(path, revision):
        calls.append((path, revision))
        return real(str(tiny_neox_dir), None)

    from transformers import AutoTokenizer

    monkeypatch.setattr(models, "_from_pretrained", fake)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: "tok")
    assert models.resolve("EleutherAI/pythia-160m@step143000") == ("EleutherAI/pythia-160m", "step143000")
    load_model("EleutherAI/pythia-160m@step143000", "trained")
    load_model("EleutherAI/pythia-160m", "step0")
    assert calls == [("EleutherAI/pythia-160m", "step143000"), ("EleutherAI/pythia-160m", "step0")]
