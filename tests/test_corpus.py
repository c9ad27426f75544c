import json
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


def test_hf_local_dataset_folder(iso_cache, tmp_path, char_tokenizer):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    rows = [{"text": f"document number {i} says hello."} for i in range(300)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = corpus.parse_corpus(f"hf:{folder}")
    assert spec.kind == "hf" and spec.name == str(folder)
    seqs = corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, max_tokens=3000)
    held = corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32, split="heldout", max_tokens=3000)
    assert seqs.shape[1] == 32 and seqs.shape[0] >= 80 and held.shape[0] >= 4
    decoded = "".join(char_tokenizer.convert_ids_to_tokens(seqs[0].tolist()))
    assert "document number" in decoded or "says hello" in decoded
    with pytest.raises(CorpusError, match="needs max_tokens"):
        corpus.token_sequences(f"hf:{folder}", char_tokenizer, "char", 32)


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
