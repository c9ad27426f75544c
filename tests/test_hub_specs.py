"""Hub-shaped sources without the hub: corpus specs (`hf:`...) and model specs (`gpt2`, `org/name@rev`).

Every test runs offline on local stand-ins: dataset folders written here, and a fake Hugging Face hub
cache (`fake_hub`) for models. Hub dataset forms that cannot run offline are checked by capturing the
arguments that reach `datasets.load_dataset`.
"""

from __future__ import annotations

import json

import pytest

from saesanity import corpus
from saesanity.paths import REPO_ROOT


def _jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def _write_zst_shards(folder, n_shards: int, per_shard: int) -> list[str]:
    """The Pile's layout: `train/NN.jsonl.zst` shards of {"text", "meta"} rows; returns the texts in order."""
    import zstandard

    (folder / "train").mkdir(parents=True)
    texts = []
    for s in range(n_shards):
        rows = [{"text": f"shard {s} document {i} reads well.", "meta": {"pile_set_name": "Pile-CC"}}
                for i in range(per_shard)]
        texts += [r["text"] for r in rows]
        (folder / "train" / f"{s:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(rows)))
    return texts


# ---------------------------------------------------------------- bug 1: .jsonl.zst shards (the Pile)

def test_lock_pins_zstandard():
    """`datasets` decompresses `.zst` through the optional `zstandard`; a fresh `make setup` must install it."""
    lock = (REPO_ROOT / "requirements.lock").read_text().splitlines()
    assert any(line.startswith("zstandard==") for line in lock)


def test_jsonl_zst_shards_stream_in_order(tmp_path, iso_cache, tiny_llama_dir):
    from transformers import AutoTokenizer

    folder = tmp_path / "pile"
    texts = _write_zst_shards(folder, n_shards=3, per_shard=40)
    assert list(corpus.hf_documents(corpus.parse_corpus(f"hf:{folder}"))) == texts
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    seqs = corpus.token_sequences(f"hf:{folder}", tok, "char", 32, max_tokens=3000)
    decoded = "".join(tok.convert_ids_to_tokens(seqs.reshape(-1).tolist()))
    assert seqs.shape[1] == 32 and "shard 0 document" in decoded and "shard 2 document" in decoded


# ---------------------------------------------------------------- bug 2: bare hub model names (`gpt2`)

@pytest.fixture
def fake_hub(tmp_path, monkeypatch, tiny_llama_dir, tiny_neox_dir):
    """An offline Hugging Face hub cache holding tiny stand-ins of the `paper` profiles' models:

    - `gpt2` (main): a 2-layer GPT-2, d_model 32, with the character tokenizer;
    - `EleutherAI/pythia-70m`: main = `tiny_neox_dir`; `step0` = the same architecture, other weights.

    The hub is pointed at it (helpers.point_hub_at), so `load_model("gpt2")` runs transformers' real
    hub resolution (refs/<revision> -> snapshots/<sha>). Returns the cache folder; add more repos with
    helpers.add_to_fake_hub.
    """
    import torch
    from helpers import add_to_fake_hub, point_hub_at
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoXForCausalLM

    hub = tmp_path / "hub"
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)

    def saved(model, name):
        folder = tmp_path / name
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        return folder

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=128))
    add_to_fake_hub(hub, "gpt2", saved(gpt2, "gpt2"))
    add_to_fake_hub(hub, "EleutherAI/pythia-70m", tiny_neox_dir)
    torch.manual_seed(1)
    step0 = GPTNeoXForCausalLM(GPTNeoXForCausalLM.config_class.from_pretrained(tiny_neox_dir))
    add_to_fake_hub(hub, "EleutherAI/pythia-70m", saved(step0, "pythia_step0"), revision="step0")
    point_hub_at(monkeypatch, hub)
    return hub


def _same_weights(a, b) -> bool:
    import torch

    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_bare_hub_name_loads_from_the_hub_cache(fake_hub):
    from saesanity.models import load_model

    lm = load_model("gpt2")
    assert type(lm.model).__name__ == "GPT2LMHeadModel" and lm.n_layers == 2 and lm.d_model == 32
    assert lm.tokenizer_id == "gpt2" and lm.name == "gpt2"
    assert lm.tokenizer("hi")["input_ids"] == [73, 74]  # the stand-in's character tokenizer, from the cache
    assert _same_weights(load_model("gpt2@main"), lm)


def test_hub_revision_resolves_through_refs(fake_hub):
    from saesanity.models import load_model

    main = load_model("EleutherAI/pythia-70m")
    at_step0 = load_model("EleutherAI/pythia-70m@step0")
    variant = load_model("EleutherAI/pythia-70m", "step0")
    assert _same_weights(at_step0, variant) and not _same_weights(main, at_step0)
    assert {m.tokenizer_id for m in (main, at_step0, variant)} == {"EleutherAI/pythia-70m"}
    with pytest.raises(OSError):  # a revision the cache lacks is not silently the main branch
        load_model("EleutherAI/pythia-70m@step1")


@pytest.mark.parametrize("spec, expected", [
    ("gpt2", ("gpt2", None)),
    ("gpt2@6c0e608", ("gpt2", "6c0e608")),
    ("EleutherAI/pythia-160m", ("EleutherAI/pythia-160m", None)),
    ("EleutherAI/pythia-160m@step143000", ("EleutherAI/pythia-160m", "step143000")),
    ("org/my.model_v2-x@refs/pr/1", ("org/my.model_v2-x", "refs/pr/1")),
])
def test_resolve_hub_forms(spec, expected):
    from saesanity import models

    assert models.resolve(spec) == expected
    assert models.tokenizer_id(spec) == expected[0]


def test_resolve_local_folder_and_tiny_tokenizer_id(tiny_llama_dir):
    from saesanity import models

    assert models.resolve(str(tiny_llama_dir)) == (str(tiny_llama_dir), None)
    assert models.tokenizer_id(str(tiny_llama_dir)) == str(tiny_llama_dir)
    assert models.tokenizer_id(models.TINY) == models.SMOLLM2 == models.tokenizer_id(models.SMOLLM2)


@pytest.mark.parametrize("spec, what", [
    ("", "empty"),
    ("gpt2 ", "whitespace"),
    ("gpt 2", "whitespace"),
    ("a/b/c", "hub name 'a/b/c'"),
    ("org/", "hub name 'org/'"),
    ("-x", "hub name '-x'"),
    ("@step0", "no model name before '@'"),
    ("gpt2@", "revision '' after '@'"),
    ("gpt2@a@b", "revision 'a@b'"),
    ("./missing/folder", "no such local folder"),
])
def test_malformed_model_specs_are_one_line_errors(spec, what):
    from saesanity import models

    with pytest.raises(models.ModelError) as err:
        models.resolve(spec)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"model {spec!r}: ") and what in msg
    assert "'<org>/<name>[@<revision>]'" in msg and "local folder" in msg
