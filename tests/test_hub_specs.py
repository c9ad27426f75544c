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
    from saesanity import content, models

    assert models.resolve(str(tiny_llama_dir)) == (str(tiny_llama_dir), None)
    assert models.tokenizer_id(str(tiny_llama_dir)) == f"{tiny_llama_dir}#{content.files_digest(tiny_llama_dir)}"
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


# ---------------------------------------------------------------- bug 3: corpus spec forms for script datasets

def _write_parquet(path, texts: list[str], column: str = "text") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts, "meta": ["{}"] * len(texts)}), path)


def _docs(spec: str) -> list[str]:
    return list(corpus.hf_documents(corpus.parse_corpus(spec)))


@pytest.mark.parametrize("spec, fields", [
    ("hf:NeelNanda/pile-10k", dict(name="NeelNanda/pile-10k")),
    ("hf:wikitext:wikitext-103-raw-v1", dict(name="wikitext", config="wikitext-103-raw-v1")),
    ("hf:togethercomputer/RedPajama-Data-1T-Sample@refs/convert/parquet",
     dict(name="togethercomputer/RedPajama-Data-1T-Sample", revision="refs/convert/parquet")),
    ("hf:Skylion007/openwebtext:plain_text@refs/convert/parquet?data_files=plain_text/*train/*.parquet",
     dict(name="Skylion007/openwebtext", config="plain_text", revision="refs/convert/parquet",
          data_files=("plain_text/*train/*.parquet",))),
    ("hf:org/ds@v1.0?data_files=a/*.parquet,b/*.parquet&split=validation&text_column=content",
     dict(name="org/ds", revision="v1.0", data_files=("a/*.parquet", "b/*.parquet"), split="validation",
          text_column="content")),
])
def test_parse_hub_forms(spec, fields):
    got = corpus.parse_corpus(spec)
    assert got == corpus.CorpusSpec("hf", **fields)
    assert got.describe() == spec


def test_parse_local_forms(tmp_path, monkeypatch):
    _write_parquet(tmp_path / "ds" / "data" / "train-0.parquet", ["a"])
    (tmp_path / "ds" / "x.jsonl.zst").write_bytes(b"")
    folder = str(tmp_path / "ds")
    cases = {
        f"hf:{folder}": dict(name=folder),
        f"hf:{folder}?data_files=data/*.parquet&split=test": dict(name=folder, data_files=("data/*.parquet",),
                                                                   split="test"),
        f"hf:{folder}/data/train-0.parquet": dict(name=f"{folder}/data/train-0.parquet", builder="parquet"),
        f"hf:{folder}/*.jsonl.zst?text_column=body": dict(name=f"{folder}/*.jsonl.zst", builder="json",
                                                          text_column="body"),
    }
    for spec, fields in cases.items():
        got = corpus.parse_corpus(spec)
        assert got == corpus.CorpusSpec("hf", **fields), spec
        assert got.describe() == spec and corpus.parse_corpus(got.describe()) == got
    monkeypatch.chdir(tmp_path)
    assert corpus.parse_corpus("hf:./ds").name == folder  # local paths are made absolute (stable cache keys)
    assert corpus.parse_corpus("hf:ds/data/*.parquet").name == f"{folder}/data/*.parquet"


def test_describe_names_every_field_that_changes_the_data():
    import dataclasses

    base = corpus.parse_corpus("hf:org/ds")
    changes = dict(name="org/other", config="c", revision="refs/convert/parquet", data_files=("x/*.parquet",),
                   split="validation", text_column="content", standin="pile")
    assert set(changes) | {"kind", "sources", "builder"} == {f.name for f in dataclasses.fields(base)}
    described = [base.describe()] + [dataclasses.replace(base, **{k: v}).describe() for k, v in changes.items()]
    assert len(set(described)) == len(described)


@pytest.mark.parametrize("spec, what", [
    ("hf:", "no dataset, folder or file after 'hf:'"),
    ("hf:a/b/c", "dataset 'a/b/c' is not a hub id"),
    ("hf:org/my ds", "dataset 'org/my ds' is not a hub id"),
    ("hf:org/ds:", "config '' after ':'"),
    ("hf:org/ds:@main", "config '' after ':'"),
    ("hf:org/ds@", "revision '' after '@'"),
    ("hf:org/ds@main@x", "revision 'main@x'"),
    ("hf:org/ds?", "no options after '?'"),
    ("hf:org/ds?data_file=x", "unknown option 'data_file'"),
    ("hf:org/ds?split=train&split=test", "option split= given twice"),
    ("hf:org/ds?data_files=", "option data_files= needs a value"),
    ("hf:org/ds?text_column=a b", "option text_column= needs a value without whitespace"),
    ("hf:org/ds?data_files=a,,b", "data_files='a,,b' has an empty pattern"),
    ("hf:org/ds?split=train[:10%]", "split='train[:10%]' is not a split name"),
    ("hf:/no/such/folder", "no such local folder or file '/no/such/folder'"),
    ("hf:/no/such/*.parquet", "no file matches '/no/such/*.parquet'"),
    ("hf:{tmp}/notes.csv", "'notes.csv' is not a .parquet"),
    ("hf:{tmp}/a.jsonl?data_files=b.jsonl", "this spec names files already"),
])
def test_malformed_corpus_specs_are_one_line_errors(tmp_path, spec, what):
    (tmp_path / "notes.csv").write_text("text\nhello\n")
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    spec = spec.replace("{tmp}", str(tmp_path))
    with pytest.raises(corpus.CorpusError) as err:
        corpus.parse_corpus(spec)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"corpus {spec!r}: ") and what in msg
    assert "'hf:<dataset>[:<config>][@<revision>][?<options>]'" in msg and "data_files=<glob>" in msg


def test_unknown_corpus_kind_lists_every_form():
    with pytest.raises(corpus.CorpusError, match=r"expected 'debian', 'debian:<src>,<src>', 'standin:<name>' or "
                                                 r"'hf:<dataset>"):
        corpus.parse_corpus("wiki:en")


def test_local_parquet_folder_with_data_files_subset(tmp_path):
    folder = tmp_path / "ds"
    texts = {n: [f"{n} row {i}" for i in range(5)] for n in ("train-00000", "train-00001", "extra")}
    for n, t in texts.items():
        _write_parquet(folder / ("data" if n.startswith("train") else "other") / f"{n}.parquet", t)
    assert _docs(f"hf:{folder}?data_files=data/train-00001.parquet") == texts["train-00001"]
    assert _docs(f"hf:{folder}?data_files=data/*.parquet,other/*.parquet&split=validation") == [
        *texts["train-00000"], *texts["train-00001"], *texts["extra"]]


def test_local_jsonl_folder_with_data_files_subset(tmp_path):
    import zstandard

    folder = tmp_path / "ds"
    folder.mkdir()
    rows = {n: [{"text": f"{n} doc {i}"} for i in range(4)] for n in ("a", "b", "c")}
    (folder / "a.jsonl").write_bytes(_jsonl(rows["a"]))
    (folder / "b.jsonl").write_bytes(_jsonl(rows["b"]))
    (folder / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(rows["c"])))
    want = [r["text"] for n in ("b", "c") for r in rows[n]]
    assert _docs(f"hf:{folder}?data_files=b.jsonl,c.jsonl.zst") == want
    ab = [r["text"] for n in ("a", "b") for r in rows[n]]
    assert _docs(f"hf:{folder}/*.jsonl") == ab  # files named by a glob, read with the json builder
    assert _docs(f"hf:{folder}/c.jsonl.zst") == [r["text"] for r in rows["c"]]


def test_text_column_option_and_missing_column_error(tmp_path):
    _write_parquet(tmp_path / "ds" / "train.parquet", ["hello there"], column="content")
    assert _docs(f"hf:{tmp_path / 'ds'}?text_column=content") == ["hello there"]
    with pytest.raises(corpus.CorpusError, match=r"has no column 'text'; columns: \['content', 'meta'\]; .*text_column"):
        _docs(f"hf:{tmp_path / 'ds'}")


@pytest.fixture
def captured_load(monkeypatch):
    """Replace datasets.load_dataset by a recorder streaming two rows: hub forms checked offline."""
    import datasets

    calls: list[dict] = []

    def fake(**kwargs):
        calls.append(kwargs)
        return iter([{"text": "one"}, {"text": "two"}])

    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


def test_hub_forms_reach_load_dataset(captured_load):
    assert _docs("hf:togethercomputer/RedPajama-Data-1T-Sample@refs/convert/parquet") == ["one", "two"]
    _docs("hf:Skylion007/openwebtext:plain_text@refs/convert/parquet?data_files=plain_text/*train/*.parquet,x.parquet"
          "&split=validation")
    _docs("hf:monology/pile-uncopyrighted")
    assert captured_load == [
        dict(path="togethercomputer/RedPajama-Data-1T-Sample", name=None, split="train", streaming=True,
             revision="refs/convert/parquet"),
        dict(path="Skylion007/openwebtext", name="plain_text", split="validation", streaming=True,
             revision="refs/convert/parquet", data_files={"validation": ["plain_text/*train/*.parquet", "x.parquet"]}),
        dict(path="monology/pile-uncopyrighted", name=None, split="train", streaming=True),
    ]


def test_local_files_reach_their_builder(captured_load, tmp_path):
    (tmp_path / "00.jsonl.zst").write_bytes(b"")
    _docs(f"hf:{tmp_path}/*.jsonl.zst?split=test")
    assert captured_load == [dict(path="json", name=None, split="test", streaming=True,
                                  data_files={"test": [f"{tmp_path}/*.jsonl.zst"]})]


def test_token_cache_tells_data_files_selections_apart(tmp_path, iso_cache, tiny_llama_dir):
    from transformers import AutoTokenizer

    folder = tmp_path / "ds"
    folder.mkdir()
    for n in ("a", "b"):
        (folder / f"{n}.jsonl").write_bytes(_jsonl([{"text": f"{n * 8} document {i}."} for i in range(100)]))
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    a, b = (corpus.token_sequences(f"hf:{folder}?data_files={n}.jsonl", tok, "char", 32, max_tokens=2000)
            for n in ("a", "b"))
    assert "aaaaaaaa" not in "".join(tok.convert_ids_to_tokens(b.reshape(-1).tolist()))


@pytest.mark.parametrize("split_dir", ["train", "partial-train"])
def test_parquet_branch_layout_infers_the_train_split(tmp_path, split_dir):
    """The hub's `refs/convert/parquet` branch holds `<config>/<split>/NNNN.parquet` (`partial-<split>` when
    only the first ~5 GB were converted); a local copy of that layout streams as split `train` in shard
    order, as the `paper` profiles' `@refs/convert/parquet` corpora rely on (no data_files needed)."""
    folder = tmp_path / "branch"
    texts = [[f"shard {s} row {i}" for i in range(3)] for s in range(2)]
    for s, t in enumerate(texts):
        _write_parquet(folder / "plain_text" / split_dir / f"{s:04d}.parquet", t)
    (folder / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    assert _docs(f"hf:{folder}") == texts[0] + texts[1]


SCRIPT_DATASETS = {"togethercomputer/RedPajama-Data-1T-Sample", "Skylion007/openwebtext"}  # ship a loading script


def test_paper_profiles_name_sources_the_locked_libraries_can_load():
    from saesanity import models, params
    from saesanity.paths import PARAMS_DIR

    seen = set()
    for stem in sorted(p.stem for p in PARAMS_DIR.glob("*.yaml")):
        values = params.profile_values(stem, "paper")
        if "corpus" in values:
            spec = corpus.parse_corpus(values["corpus"])
            seen.add(spec.name)
            assert spec.name not in SCRIPT_DATASETS or spec.revision == "refs/convert/parquet", stem
        if values.get("model") not in (None, models.SMOLLM2, models.TINY):
            models.resolve(values["model"])  # hub forms resolve without the network
    assert SCRIPT_DATASETS <= seen
