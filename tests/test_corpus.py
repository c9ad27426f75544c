import json
import re
import shutil
import struct
import zlib

import numpy as np
import pytest

from saesanity import corpus
from saesanity.corpus import CorpusError

needs_debian = pytest.mark.skipif(not (corpus.debian_dir() / "root").exists(), reason="run `make data` first")


@needs_debian
@pytest.mark.parametrize("source", corpus.SOURCES)
def test_each_debian_source_parses_to_prose(source):
    docs = list(corpus.documents(source))
    assert len(docs) >= 6
    text = " ".join(docs[:3])
    assert sum(len(d) for d in docs) > 1_000_000
    assert "<" not in text[:20000] or source == "fortunes"  # OSIS/markup stripped
    assert sum(c.isalpha() for c in text) / len(text) > 0.6


def test_r_character_vector_parser():
    def chars(s):
        b = s.encode()
        return struct.pack(">ii", 0x00040009, len(b)) + b
    blob = (b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
            + struct.pack(">ii", 16, 3) + chars("Emma Woodhouse,") + struct.pack(">ii", 9, -1) + chars("handsome"))
    assert corpus._r_strings(blob) == ["Emma Woodhouse,", "", "handsome"]


def test_sword_block_parser(tmp_path):
    texts = ['<verse osisID="Gen.1.1">In the beginning<note n="a">footnote</note> God created</verse> .',
             "<div>And &amp; the earth</div>"]
    blob, index = b"", b""
    for t in texts:
        z = zlib.compress(t.encode())
        index += struct.pack("<III", len(blob), len(z), len(t))
        blob += z
    (tmp_path / "ot.bzs").write_bytes(index)
    (tmp_path / "ot.bzz").write_bytes(blob)
    assert list(corpus._sword_blocks(tmp_path, "bzs", "bzz")) == ["In the beginning God created.", "And & the earth"]


def test_unknown_and_empty_sources(tmp_path):
    with pytest.raises(CorpusError, match="unknown corpus source 'dickens'"):
        corpus.documents("dickens")
    with pytest.raises(CorpusError, match=r"unknown source\(s\) \['dickens'\]"):
        corpus.parse_corpus("debian:austen,dickens")
    (tmp_path / "usr/share/games/fortunes").mkdir(parents=True)
    (tmp_path / "usr/share/games/fortunes/empty").write_text("%\n%\n")

    class Tok:
        eos_token_id = 0

    with pytest.raises(CorpusError, match="empty source"):
        corpus._tokenize_stream(corpus.documents("fortunes", root=tmp_path), Tok(), None, "fortunes")
    with pytest.raises(CorpusError, match="make data"):
        corpus.documents("austen", root=tmp_path / "missing")


@pytest.fixture
def char_tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def _numbered_docs(folder, n):
    folder.mkdir()
    rows = [{"text": f"doc {i:05d} says hello."} for i in range(n)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def _doc_numbers(rows, tokenizer) -> set[int]:
    """Numbers of the documents whose text appears (whole or cut at a row edge) in `rows`."""
    text = "|".join("".join(tokenizer.convert_ids_to_tokens(r.tolist())).replace("<eos>", "|") for r in rows)
    return {int(m) for m in re.findall(r"doc (\d{5})", text)}


def test_hf_heldout_is_disjoint_and_exactly_sized(iso_cache, tmp_path, char_tokenizer):
    folder = tmp_path / "my_dataset"
    _numbered_docs(folder, 3000)
    spec = corpus.parse_corpus(f"hf:{folder}")
    assert spec.kind == "hf" and spec.name == str(folder)
    seqs = corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, max_tokens=3000)
    held = corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, split="heldout", max_tokens=3000)
    assert seqs.shape == held.shape == (94, 32)  # ceil(3000 / 32) rows each
    assert held.dtype == np.uint16  # 97-symbol vocabulary
    train_docs, held_docs = _doc_numbers(seqs, char_tokenizer), _doc_numbers(held, char_tokenizer)
    assert train_docs and held_docs and not train_docs & held_docs
    expect = {i for i in range(3000) if corpus.is_heldout_document(f"doc {i:05d} says hello.")}
    assert held_docs <= expect and not train_docs & expect
    assert 0.03 < len(expect) / 3000 < 0.07
    # a shorter request is a prefix of a longer one, and a second call reuses the cached rows
    short = corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, split="heldout", max_tokens=640)
    assert np.array_equal(short, held[:20])
    n_art = len(list((iso_cache / "token_rows").iterdir()))
    corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, max_tokens=3000)
    assert len(list((iso_cache / "token_rows").iterdir())) == n_art
    with pytest.raises(CorpusError, match="needs max_tokens"):
        corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32)
    with pytest.raises(CorpusError, match=r"ran out after .* rows"):  # ~5% of 3,000 docs is < 200 rows
        corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, split="heldout", max_tokens=10_000)


def test_hf_rows_resume_after_interruption(iso_cache, tmp_path, char_tokenizer, monkeypatch):
    folder = tmp_path / "ds"
    _numbered_docs(folder, 3000)
    spec = corpus.parse_corpus(f"hf:{folder}")
    real = corpus._fill
    fills = []
    monkeypatch.setattr(corpus, "_fill", lambda *a: fills.append(1) or real(*a))
    want = np.array(corpus.token_rows(spec, char_tokenizer, "char", 32, 700, progress=False))
    n_fills = len(fills)
    assert n_fills >= 4
    shutil.rmtree(iso_cache / "token_rows")  # the artifact and its lock file: tokenized afresh below
    calls = {"n": 0}

    def dying_fill(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(corpus, "_SAVE_EVERY_S", 0.0)  # save after every tokenizer batch
    monkeypatch.setattr(corpus, "_fill", dying_fill)
    with pytest.raises(KeyboardInterrupt):
        corpus.token_rows(spec, char_tokenizer, "char", 32, 700, progress=False)
    (partial,) = iso_cache.glob("token_rows/*.partial")
    assert json.loads((partial / "progress.json").read_text())["docs"] == 512  # two batches of 256 saved
    fills.clear()
    monkeypatch.setattr(corpus, "_fill", lambda *a: fills.append(1) or real(*a))
    got = corpus.token_rows(spec, char_tokenizer, "char", 32, 700, progress=False)
    assert len(fills) == n_fills - 2  # the two saved batches are skipped, not tokenized again
    assert np.array_equal(got, want)


@needs_debian
def test_sequences_seeded_and_heldout_disjoint(iso_cache, char_tokenizer):
    a = corpus.token_sequences("debian:fortunes", char_tokenizer, "char", 64, seed=0)
    b = corpus.token_sequences("debian:fortunes", char_tokenizer, "char", 64, seed=0)
    c = corpus.token_sequences("debian:fortunes", char_tokenizer, "char", 64, seed=1)
    h = corpus.token_sequences("debian:fortunes", char_tokenizer, "char", 64, split="heldout", seed=0)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert sorted(map(bytes, a)) == sorted(map(bytes, c))  # same windows, different order
    assert 0.03 < h.shape[0] / (a.shape[0] + h.shape[0]) < 0.07
    n = a.shape[0] + h.shape[0]
    tr, ho = corpus.window_indices(n, "train", 0), corpus.window_indices(n, "heldout", 0)
    assert not set(tr) & set(ho) and len(set(tr) | set(ho)) == n
    assert set(ho) == set(corpus.window_indices(n, "heldout", 7))  # held-out text independent of the seed
