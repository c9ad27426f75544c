"""The paper-mini stand-ins: tiny random models of the papers' architectures (`standin:<hub name>`, with
Pythia's step-0 checkpoint) and local corpora in the hub datasets' layouts (`standin:<name>`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from saesanity import corpus, models
from saesanity.activations import parse_hookpoint, run_to_hookpoints
from saesanity.models import ModelError, load_model

needs_debian = pytest.mark.skipif(not (corpus.debian_dir() / "root").exists(), reason="run `make data` first")

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


# ---------------------------------------------------------------- corpora

def test_standin_spec_parses_to_its_folder_and_describes_itself(iso_cache, tmp_path, monkeypatch):
    spec = corpus.parse_corpus("standin:pile")
    assert spec.kind == "hf" and spec.standin == "pile" and spec.builder is None
    assert spec.describe() == "standin:pile" and spec.name.startswith(str(iso_cache / "corpus"))
    assert corpus.load_kwargs(spec) == {"path": spec.name, "name": None, "split": "train", "streaming": True}
    opt = corpus.parse_corpus("standin:openwebtext?text_column=text&split=train&data_files=plain_text/*/0000.parquet")
    assert opt.describe() == "standin:openwebtext?data_files=plain_text/*/0000.parquet"
    monkeypatch.setenv("SAESANITY_CACHE", str(tmp_path / "elsewhere"))
    moved = corpus.parse_corpus("standin:pile")  # the token caches' key does not depend on where the cache is
    assert moved.describe() == spec.describe() and moved.name != spec.name
    with pytest.raises(corpus.CorpusError, match="no stand-in 'c4'"):
        corpus.parse_corpus("standin:c4")
    with pytest.raises(corpus.CorpusError, match="unknown option"):
        corpus.parse_corpus("standin:pile?shuffle=1")


@needs_debian
def test_standin_layouts_are_the_hub_datasets(iso_cache):
    import pyarrow.parquet as pq
    import zstandard

    pile = corpus.standin_folder("pile")
    shards = sorted(p.relative_to(pile).as_posix() for p in pile.rglob("*.zst"))
    assert shards == [f"train/{i:02d}.jsonl.zst" for i in range(corpus.STANDIN_SHARDS)]
    first = zstandard.ZstdDecompressor().stream_reader(open(pile / shards[0], "rb")).read(1 << 16).decode()
    row = json.loads(first.splitlines()[0])
    assert set(row) == {"text", "meta"} and row["meta"]["pile_set_name"].startswith("debian:")
    for name, split in (("redpajama-sample", "train"), ("openwebtext", "partial-train")):
        folder = corpus.standin_folder(name)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
        assert files == [f"plain_text/{split}/{i:04d}.parquet" for i in range(corpus.STANDIN_SHARDS)]
        assert "text" in pq.read_schema(folder / files[0]).names


@needs_debian
@pytest.mark.parametrize("name", sorted(corpus.STANDIN_CORPORA))
def test_standin_streams_as_its_hf_folder(name, iso_cache):
    """A stand-in is read exactly as `hf:<its folder>`: same documents in the same order, pieces of Debian text."""
    import itertools

    spec = corpus.parse_corpus(f"standin:{name}")
    head = list(itertools.islice(corpus.hf_documents(spec), 50))
    assert head == list(itertools.islice(corpus.hf_documents(corpus.parse_corpus(f"hf:{spec.name}")), 50))
    assert all(0 < len(d) <= corpus.STANDIN_DOC_CHARS for d in head)
    assert [t for _, t in corpus.standin_documents(name)[:50]] == head


@needs_debian
def test_standin_token_rows_heldout_disjoint(iso_cache):
    tok = models.load_tokenizer(models.TINY)
    train = corpus.token_sequences("standin:pile", tok, models.SMOLLM2, 65, max_tokens=65 * 40)
    held = corpus.token_sequences("standin:pile", tok, models.SMOLLM2, 65, split="heldout", max_tokens=65 * 40)
    assert train.shape == held.shape == (40, 65)
    assert not {tuple(r) for r in np.asarray(train)} & {tuple(r) for r in np.asarray(held)}
    (art,) = [p for p in (iso_cache / "token_rows").iterdir() if (p / "meta.json").exists()
              and json.loads((p / "meta.json").read_text())["fields"]["split"] == "train"]
    fields = json.loads((art / "meta.json").read_text())["fields"]
    assert fields["source"] == "standin:pile" and fields["standin_key"] == corpus.standin_folder("pile").name


def test_pieces_cut_at_boundaries():
    text = "One two. Three four five.\n\nSix seven eight nine ten eleven. " * 40
    pieces = list(corpus._pieces(text, 100))
    assert all(0 < len(p) <= 100 for p in pieces)
    assert " ".join(" ".join(p.split()) for p in pieces) == " ".join(text.split())
    assert all(p.endswith((".", "ten", "eleven.")) or len(p) == 100 for p in pieces[:-1])
    assert list(corpus._pieces("x" * 250, 100)) == ["x" * 100, "x" * 100, "x" * 50]  # no boundary: hard cuts
