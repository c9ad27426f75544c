"""Text sources -> token sequences with a fixed, seeded order and a held-out split.

Offline sources are English prose shipped in Debian packages (`make data` extracts them under
`<cache>/debian/root`), each addressable by name:

| name      | package            | content                                  |
|-----------|--------------------|------------------------------------------|
| austen    | r-cran-janeaustenr | the six Jane Austen novels               |
| web       | sword-text-web     | World English Bible (with Deuterocanon)  |
| tdavid    | sword-comm-tdavid  | Spurgeon, The Treasury of David          |
| fortunes  | fortunes, fortunes-min | ~15K fortune-cookie quotations       |

A corpus spec is `debian` (every source), `debian:austen,fortunes` (some), or
`hf:<dataset>[:<config>]` for a Hugging Face dataset streamed with `datasets.load_dataset(...,
streaming=True)` (a local dataset folder works the same way, which is how the tests exercise it).

Sequences: each source's documents are tokenized and joined with the EOS token into one stream,
cut into non-overlapping `seq_len` windows; a fixed permutation (seed `SPLIT_SEED`, independent of
the shuffle seed) assigns `HOLDOUT_FRAC` of the windows to the held-out split; the rest are shuffled
with the caller's seed. Two calls with the same arguments return identical arrays.
"""

from __future__ import annotations

import html
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .cache import cached
from .paths import debian_dir

SPLIT_SEED = 12345
HOLDOUT_FRAC = 0.05
DEBIAN_PACKAGES = {
    "austen": "r-cran-janeaustenr",
    "web": "sword-text-web",
    "tdavid": "sword-comm-tdavid",
    "fortunes": "fortunes",
}
SOURCES = tuple(DEBIAN_PACKAGES)
_PARSER_VERSION = 1


class CorpusError(ValueError):
    pass


# ---------------------------------------------------------------- Debian parsers (pure Python)

def _r_strings(blob: bytes) -> list[str]:
    """Decode one R XDR-serialised character vector (what `saveRDS`/lazy-load writes)."""
    if blob[:2] != b"X\n":
        raise CorpusError("not an R XDR serialisation")
    pos = 2
    version = struct.unpack(">i", blob[pos:pos + 4])[0]
    pos += 12
    if version == 3:
        n = struct.unpack(">i", blob[pos:pos + 4])[0]
        pos += 4 + n
    flags, length = struct.unpack(">ii", blob[pos:pos + 8])
    pos += 8
    if flags & 0xFF != 16:  # STRSXP
        raise CorpusError(f"expected an R character vector, got SEXP type {flags & 0xFF}")
    out = []
    for _ in range(length):
        _, n = struct.unpack(">ii", blob[pos:pos + 8])
        pos += 8
        if n == -1:  # NA_character_
            out.append("")
            continue
        out.append(blob[pos:pos + n].decode("utf-8", "replace"))
        pos += n
    return out


def _austen(root: Path) -> Iterator[str]:
    """One document per novel: `Rdata.rdb` is a run of [4-byte length][zlib stream] records."""
    rdb = root / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"
    data = rdb.read_bytes()
    pos = 0
    while pos < len(data):
        d = zlib.decompressobj()
        raw = d.decompress(data[pos + 4:])
        pos = len(data) - len(d.unused_data)
        lines = _r_strings(raw)
        text = "\n".join(lines)
        # paragraphs are separated by empty lines; join wrapped lines inside a paragraph
        paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
        yield "\n\n".join(p for p in paras if p)


_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TAG = re.compile(r"<[^>]+>")
_SPACE_PUNCT = re.compile(r" ([,.;:!?'’”)])")


def _osis_to_text(s: str) -> str:
    s = _NOTE.sub(" ", s)
    s = _TAG.sub(" ", s)
    s = " ".join(html.unescape(s).split())
    return _SPACE_PUNCT.sub(r"\1", s)  # tags between a word and its punctuation left a space


def _sword_blocks(moddir: Path, index_ext: str, data_ext: str) -> Iterator[str]:
    """SWORD zText/zCom: `<III>` (offset, size, uncompressed size) records index zlib blocks."""
    for testament in ("ot", "nt"):
        idx, dat = moddir / f"{testament}.{index_ext}", moddir / f"{testament}.{data_ext}"
        if not idx.exists() or idx.stat().st_size == 0:
            continue
        index, blob = idx.read_bytes(), dat.read_bytes()
        for off, size, _ in struct.iter_unpack("<III", index):
            if size == 0:
                continue
            text = _osis_to_text(zlib.decompress(blob[off:off + size]).decode("utf-8", "replace"))
            if text:
                yield text


def _web(root: Path) -> Iterator[str]:
    return _sword_blocks(root / "usr/share/sword/modules/texts/ztext/engWEB2015eb", "bzs", "bzz")


def _tdavid(root: Path) -> Iterator[str]:
    return _sword_blocks(root / "usr/share/sword/modules/comments/zcom/tdavid", "czs", "czz")


def _fortunes(root: Path) -> Iterator[str]:
    folder = root / "usr/share/games/fortunes"
    for f in sorted(folder.iterdir()):
        if not f.is_file() or f.suffix in (".dat", ".u8") or f.name == "ascii-art":
            continue
        for item in f.read_text("utf-8", "replace").split("\n%\n"):
            item = item.strip().strip("%").strip()
            if item:
                yield item


_PARSERS = {"austen": _austen, "web": _web, "tdavid": _tdavid, "fortunes": _fortunes}


def documents(source: str, root: Path | None = None) -> Iterator[str]:
    """Documents of one Debian source by name (see the module table)."""
    if source not in _PARSERS:
        raise CorpusError(f"unknown corpus source {source!r}; valid: {list(SOURCES)}")
    root = root or debian_dir() / "root"
    if not root.exists():
        raise CorpusError(f"Debian text not found under {root}; run `make data` (apt-get download + dpkg-deb -x)")
    return _PARSERS[source](root)


# ---------------------------------------------------------------- corpus specs

@dataclass(frozen=True)
class CorpusSpec:
    kind: str  # "debian" | "hf"
    sources: tuple[str, ...] = ()  # debian sources
    name: str = ""  # hf dataset name or folder
    config: str | None = None
    text_column: str = "text"

    def describe(self) -> str:
        return f"debian:{','.join(self.sources)}" if self.kind == "debian" else f"hf:{self.name}"


def parse_corpus(spec: str) -> CorpusSpec:
    if spec == "debian":
        return CorpusSpec("debian", SOURCES)
    if spec.startswith("debian:"):
        names = tuple(s.strip() for s in spec[len("debian:"):].split(",") if s.strip())
        bad = [s for s in names if s not in SOURCES]
        if bad or not names:
            raise CorpusError(f"corpus {spec!r}: unknown source(s) {bad}; valid: {list(SOURCES)}")
        return CorpusSpec("debian", names)
    if spec.startswith("hf:"):
        rest = spec[3:]
        name, _, config = rest.partition(":") if not Path(rest).exists() else (rest, "", "")
        if not name:
            raise CorpusError(f"corpus {spec!r}: give a dataset name, e.g. hf:NeelNanda/pile-10k")
        return CorpusSpec("hf", name=name, config=config or None)
    raise CorpusError(f"corpus {spec!r}: expected 'debian', 'debian:<src>,<src>' or 'hf:<dataset>[:<config>]'")


def hf_documents(spec: CorpusSpec, split: str = "train") -> Iterator[str]:
    """Stream documents of a Hugging Face dataset (or a local dataset folder)."""
    import datasets

    ds = datasets.load_dataset(spec.name, spec.config, split=split, streaming=True)
    for row in ds:
        text = row.get(spec.text_column)
        if text is None:
            raise CorpusError(f"dataset {spec.name!r} has no column {spec.text_column!r}; columns: {list(row)}")
        if text.strip():
            yield text


# ---------------------------------------------------------------- tokens

def _tokenize_stream(docs: Iterator[str], tokenizer: Any, max_tokens: int | None, what: str) -> np.ndarray:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise CorpusError("tokenizer has no EOS token to separate documents")
    parts, total, batch = [], 0, []

    def flush() -> int:
        n = 0
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            parts.append(np.asarray(ids + [eos], dtype=np.int32))
            n += len(ids) + 1
        batch.clear()
        return n

    for doc in docs:
        batch.append(doc)
        if len(batch) == 256:
            total += flush()
            if max_tokens is not None and total >= max_tokens:
                break
    if batch:
        total += flush()
    if total == 0:
        raise CorpusError(f"corpus source {what!r} produced no tokens (empty source)")
    out = np.concatenate(parts)
    return out[:max_tokens] if max_tokens is not None else out


def token_stream(source: str, tokenizer: Any, tokenizer_id: str, *, hf: CorpusSpec | None = None,
                 max_tokens: int | None = None) -> np.ndarray:
    """Cached int32 token stream of one source (documents joined by EOS)."""
    fields = {"source": source, "tokenizer": tokenizer_id, "parser": _PARSER_VERSION, "max_tokens": max_tokens}

    def compute(work: Path) -> dict:
        docs = hf_documents(hf) if hf is not None else documents(source)
        toks = _tokenize_stream(docs, tokenizer, max_tokens, source)
        np.save(work / "tokens.npy", toks)
        return {"n_tokens": int(toks.size)}

    path = cached("tokens", fields, compute)
    return np.load(path / "tokens.npy", mmap_mode="r")


def token_sequences(corpus: str, tokenizer: Any, tokenizer_id: str, seq_len: int, *, split: str = "train",
                    seed: int = 0, max_tokens: int | None = None) -> np.ndarray:
    """[n_seq, seq_len] int32 token windows of `corpus` in a seeded order.

    `split` is `train` or `heldout` (`HOLDOUT_FRAC` of the windows, chosen by a fixed permutation).
    `max_tokens` bounds how much of a streamed HF dataset is read (required for `hf:` corpora).
    """
    if split not in ("train", "heldout"):
        raise CorpusError(f"split {split!r}; valid: 'train', 'heldout'")
    if seq_len < 2:
        raise CorpusError(f"seq_len={seq_len}: need at least 2 tokens per sequence")
    spec = parse_corpus(corpus)
    windows = []
    if spec.kind == "debian":
        for src in spec.sources:
            stream = token_stream(src, tokenizer, tokenizer_id)
            n = stream.size // seq_len
            windows.append(np.asarray(stream[: n * seq_len]).reshape(n, seq_len))
    else:
        if max_tokens is None:
            raise CorpusError("an hf: corpus needs max_tokens (how many tokens to stream)")
        budget = int(max_tokens / (1 - HOLDOUT_FRAC)) + 2 * seq_len
        stream = token_stream(spec.name + (f":{spec.config}" if spec.config else ""), tokenizer, tokenizer_id,
                              hf=spec, max_tokens=budget)
        n = stream.size // seq_len
        windows.append(np.asarray(stream[: n * seq_len]).reshape(n, seq_len))
    allw = np.concatenate(windows)
    if allw.shape[0] < 2:
        raise CorpusError(f"corpus {corpus!r} has fewer than two {seq_len}-token sequences")
    return allw[window_indices(allw.shape[0], split, seed)]


def window_indices(n_windows: int, split: str, seed: int) -> np.ndarray:
    """Indices of the windows in `split`, in the order `seed` gives them.

    The split is a fixed permutation (`SPLIT_SEED`): its first `HOLDOUT_FRAC` are held out whatever
    the shuffle seed, so SAEs trained with different data seeds are evaluated on the same text.
    """
    order = np.random.default_rng(SPLIT_SEED).permutation(n_windows)
    n_hold = max(1, int(round(HOLDOUT_FRAC * n_windows)))
    chosen = np.sort(order[:n_hold] if split == "heldout" else order[n_hold:])
    return chosen[np.random.default_rng(seed).permutation(chosen.size)]
