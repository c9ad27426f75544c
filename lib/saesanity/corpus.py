"""Text sources -> token sequences with a fixed, seeded order and a held-out split.

Offline sources are English prose shipped in Debian packages (`make data` extracts them under
`<cache>/debian/root`), each addressable by name:

| name      | package            | content                                  |
|-----------|--------------------|------------------------------------------|
| austen    | r-cran-janeaustenr | the six Jane Austen novels               |
| web       | sword-text-web     | World English Bible (with Deuterocanon)  |
| tdavid    | sword-comm-tdavid  | Spurgeon, The Treasury of David          |
| fortunes  | fortunes, fortunes-min | ~15K fortune-cookie quotations       |

A corpus spec names the text (`parse_corpus` reads it, `CorpusSpec.describe()` writes it back):

| spec                                                | text                                                  |
|-----------------------------------------------------|-------------------------------------------------------|
| `debian`                                            | every Debian source above                             |
| `debian:austen,fortunes`                            | some of them                                          |
| `hf:<dataset>[:<config>][@<revision>][?<options>]`  | a Hugging Face hub dataset (`<name>` or `<org>/<name>`), its config (subset) and revision (branch, tag or commit) |
| `hf:<folder>[?<options>]`                           | a local dataset folder (format and splits inferred from its files) |
| `hf:<file or glob>[?<options>]`                     | local `.parquet`, `.json` or `.jsonl` files (`.jsonl.zst`, `.json.gz`, ... too), read with the `parquet` / `json` builder |
| `standin:<name>[?<options>]`                        | a local stand-in of a `paper` profile's hub corpus (`STANDIN_CORPORA`: `pile`, `redpajama-sample`, `openwebtext`), read as the `hf:` local folder it is built into |

Options, joined by `&`: `data_files=<glob>[,<glob>]` (files of a hub dataset or local folder, relative
to its root), `split=<split>` (default `train`), `text_column=<column>` (default `text`). Examples:
`hf:togethercomputer/RedPajama-Data-1T-Sample@refs/convert/parquet` (`refs/convert/parquet` is the
hub's auto-converted parquet branch: the way to read a dataset that ships only a loading script, which
the locked `datasets` refuses), `hf:org/ds?data_files=data/train-0000*.parquet&text_column=content`,
`hf:/data/pile/train/*.jsonl.zst`. A path is local when it exists, starts with `/`, `./`, `../` or
`~`, or holds a glob character (`*`, `[`); local paths are made absolute. `?` always starts the
options, so globs use `*` and `[...]` only. Every `hf:` spec is streamed with
`datasets.load_dataset(..., streaming=True)`; `load_kwargs` gives the arguments.

Stand-in corpora (the `paper-mini` profiles): Debian documents cut into web-page-sized pieces
(`STANDIN_DOC_CHARS`), shuffled under a seed of their own and written in the hub dataset's layout —
the Pile's `train/NN.jsonl.zst` shards of {"text", "meta": {"pile_set_name"}}, the parquet branch's
`<config>/<split>/NNNN.parquet` (`refs/convert/parquet`; openwebtext's is `partial-train`, as a
dataset over ~5 GB has there) — once, into `<cache>/corpus/` (`standin_folder`, also built by
`python -m saesanity.models build`). A `standin:` spec is streamed exactly as `hf:<that folder>` is;
only its `describe()` is `standin:<name>`, so the token caches' keys (that and the folder's content
key) do not depend on where the cache lives. Its text is Debian prose, not the paper's data: never a result.

Sequences: each source's documents are tokenized and joined with the EOS token into one stream,
cut into non-overlapping `seq_len` windows. Two calls with the same arguments return identical arrays.

- Debian corpora (a few million tokens) are tokenized whole: a fixed permutation (seed `SPLIT_SEED`,
  independent of the shuffle seed) assigns `HOLDOUT_FRAC` of the windows to the held-out split; the
  rest are shuffled with the caller's seed.
- Streamed (`hf:`) corpora are split by *document*: a document is held out when the BLAKE2b hash of
  its text, read as a fraction of 2⁶⁴, is below `HOLDOUT_FRAC`. Each split's documents are joined into
  their own stream and tokenized once into a flat memmap of exactly the rows asked for (`token_rows`:
  uint16 when the vocabulary fits, else uint32), cached and resumable. So the held-out split is
  disjoint from training (no window shares a document with a training window), has exactly the
  requested size, and a shorter request is a prefix of a longer one. Rows stay in stream order (the
  Pile and RedPajama are shuffled at source; the SAE batch order is seeded either way).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from .cache import cached, human_bytes
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
_ROWS_VERSION = 1
_SAVE_EVERY_S = 30.0  # how often an in-progress tokenization records what it has written


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

HF_OPTIONS = ("data_files", "split", "text_column")
_HF_FORMS = ("'hf:<dataset>[:<config>][@<revision>][?<options>]' (hub), 'hf:<folder>[?<options>]' or "
             "'hf:<file or glob>.parquet|.json|.jsonl[.zst|.gz][?<options>]' (local), <options> being "
             "'&'-joined data_files=<glob>[,<glob>], split=<split>, text_column=<column>")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # one part of a hub id, or a config name
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_SPLIT = re.compile(r"\w+")
_LOCAL_FILES = (((".parquet", "parquet"),)
                + tuple((ext + z, "json") for ext in (".jsonl", ".json") for z in ("", ".zst", ".gz")))


@dataclass(frozen=True)
class CorpusSpec:
    """A parsed corpus spec (module docstring); `describe()` writes it back canonically."""

    kind: str  # "debian" | "hf"
    sources: tuple[str, ...] = ()  # debian sources
    name: str = ""  # hub dataset id, or an absolute local folder, file or glob
    config: str | None = None  # hub config (subset)
    text_column: str = "text"
    revision: str | None = None  # hub branch, tag or commit
    data_files: tuple[str, ...] = ()  # globs relative to the dataset's root (hub repo or local folder)
    split: str = "train"
    builder: str | None = None  # "parquet" | "json" when `name` is local files; None: datasets infers it
    standin: str | None = None  # a stand-in corpus (`STANDIN_CORPORA`) whose built folder `name` is

    def describe(self) -> str:
        """The spec in the module docstring's syntax: every field that changes the data, defaults left out."""
        if self.kind == "debian":
            return f"debian:{','.join(self.sources)}"
        options = [("data_files", ",".join(self.data_files)), ("split", self.split if self.split != "train" else ""),
                   ("text_column", self.text_column if self.text_column != "text" else "")]
        query = "&".join(f"{k}={v}" for k, v in options if v)
        if self.standin:
            return f"standin:{self.standin}" + (f"?{query}" if query else "")
        return (f"hf:{self.name}" + (f":{self.config}" if self.config else "")
                + (f"@{self.revision}" if self.revision else "") + (f"?{query}" if query else ""))


def parse_corpus(spec: str) -> CorpusSpec:
    """Corpus spec (module docstring) -> CorpusSpec; a one-line CorpusError naming the bad part otherwise."""
    if spec == "debian":
        return CorpusSpec("debian", SOURCES)
    if spec.startswith("debian:"):
        names = tuple(s.strip() for s in spec[len("debian:"):].split(",") if s.strip())
        bad = [s for s in names if s not in SOURCES]
        if bad or not names:
            raise CorpusError(f"corpus {spec!r}: unknown source(s) {bad}; valid: {list(SOURCES)}")
        return CorpusSpec("debian", names)
    if spec.startswith("hf:"):
        return _parse_hf(spec)
    if spec.startswith("standin:"):
        name, qmark, query = spec[len("standin:"):].partition("?")
        if name not in STANDIN_CORPORA:
            raise CorpusError(f"corpus {spec!r}: no stand-in {name!r}; stand-ins: "
                              f"{['standin:' + n for n in STANDIN_CORPORA]}")
        if qmark and not query:
            raise _bad(spec, "no options after '?'")
        return CorpusSpec("hf", name=str(_standin_path(name)), standin=name, **_hf_options(spec, query))
    raise CorpusError(f"corpus {spec!r}: expected 'debian', 'debian:<src>,<src>', 'standin:<name>' or {_HF_FORMS}")


def _bad(spec: str, what: str) -> CorpusError:
    return CorpusError(f"corpus {spec!r}: {what}; valid: {_HF_FORMS}")


def _parse_hf(spec: str) -> CorpusSpec:
    target, qmark, query = spec[len("hf:"):].partition("?")
    if not target:
        raise _bad(spec, "no dataset, folder or file after 'hf:'")
    if qmark and not query:
        raise _bad(spec, "no options after '?'")
    options = _hf_options(spec, query)
    is_local = target.startswith(("/", "./", "../", "~")) or any(c in target for c in "*[") or Path(target).exists()
    return _local_spec(spec, target, options) if is_local else _hub_spec(spec, target, options)


def _hf_options(spec: str, query: str) -> dict[str, Any]:
    """`data_files=a,b&split=x&text_column=y` -> CorpusSpec keyword arguments."""
    found: dict[str, str] = {}
    for item in query.split("&") if query else []:
        key, eq, value = item.partition("=")
        if key not in HF_OPTIONS:
            raise _bad(spec, f"unknown option {key!r} (options: {', '.join(HF_OPTIONS)})")
        if key in found:
            raise _bad(spec, f"option {key}= given twice")
        if not value or any(c.isspace() for c in value):
            raise _bad(spec, f"option {key}= needs a value without whitespace")
        found[key] = value
    out: dict[str, Any] = {k: v for k, v in found.items() if k != "data_files"}
    if "split" in out and not _SPLIT.fullmatch(out["split"]):
        raise _bad(spec, f"split={out['split']!r} is not a split name (letters, digits, '_')")
    if "data_files" in found:
        out["data_files"] = tuple(found["data_files"].split(","))
        if not all(out["data_files"]):
            raise _bad(spec, f"data_files={found['data_files']!r} has an empty pattern")
    return out


def _hub_spec(spec: str, target: str, options: dict[str, Any]) -> CorpusSpec:
    """`<dataset>[:<config>][@<revision>]` on the hub."""
    head, at, revision = target.partition("@")
    name, colon, config = head.partition(":")
    parts = name.split("/")
    if len(parts) > 2 or not all(_NAME.fullmatch(p) for p in parts):
        raise _bad(spec, f"dataset {name!r} is not a hub id '<name>' or '<org>/<name>', nor an existing local path")
    if colon and not _NAME.fullmatch(config):
        raise _bad(spec, f"config {config!r} after ':' is empty or has characters other than letters, digits, '._-'")
    if at and not _REVISION.fullmatch(revision):
        raise _bad(spec, f"revision {revision!r} after '@' is empty or not a branch, tag or commit name")
    return CorpusSpec("hf", name=name, config=config or None, revision=revision or None, **options)


def _local_spec(spec: str, target: str, options: dict[str, Any]) -> CorpusSpec:
    """A local dataset folder, or local files named by a path or glob (their format from the extension)."""
    import glob
    import os

    path = os.path.abspath(os.path.expanduser(target))
    if any(c in path for c in "*["):
        builder = _local_builder(spec, path)
        if not glob.glob(path, recursive=True):
            raise _bad(spec, f"no file matches {path!r}")
    elif os.path.isdir(path):
        builder = None
    elif os.path.isfile(path):
        builder = _local_builder(spec, path)
    else:
        raise _bad(spec, f"no such local folder or file {path!r}")
    if builder and "data_files" in options:
        raise _bad(spec, "data_files= picks files inside a dataset folder or repo; this spec names files already")
    return CorpusSpec("hf", name=path, builder=builder, **options)


def _local_builder(spec: str, path: str) -> str:
    for ext, builder in _LOCAL_FILES:
        if path.lower().endswith(ext):
            return builder
    raise _bad(spec, f"{Path(path).name!r} is not a {', '.join(e for e, _ in _LOCAL_FILES)} file")


def load_kwargs(spec: CorpusSpec, split: str | None = None) -> dict[str, Any]:
    """The `datasets.load_dataset` arguments that stream `split` (default: the spec's) of an `hf:` spec.

    Local files go to their builder (`parquet` / `json`) as `data_files`; a hub dataset or local folder
    goes by name, with `data_files` (if given) keyed by the split so any split name selects them.
    """
    split = split or spec.split
    kwargs: dict[str, Any] = {"path": spec.builder or spec.name, "name": spec.config, "split": split,
                              "streaming": True}
    if spec.revision:
        kwargs["revision"] = spec.revision
    files = (spec.name,) if spec.builder else spec.data_files
    if files:
        kwargs["data_files"] = {split: list(files)}
    return kwargs


def hf_documents(spec: CorpusSpec, split: str | None = None) -> Iterator[str]:
    """Stream the non-empty `text_column` values of an `hf:` spec's `split` (default: the spec's), in order."""
    import datasets

    if spec.standin:
        standin_folder(spec.standin)  # built once (and checked) before it is read
    ds = datasets.load_dataset(**load_kwargs(spec, split))
    for row in ds:
        text = row.get(spec.text_column)
        if text is None:
            raise CorpusError(f"dataset {spec.describe()!r} has no column {spec.text_column!r}; columns: {list(row)}; "
                              "name one with ?text_column=<column>")
        if text.strip():
            yield text


# ---------------------------------------------------------------- stand-in corpora (paper-mini)

@dataclass(frozen=True)
class StandinCorpus:
    """A local stand-in of a hub corpus: Debian text in that dataset's file layout and row schema."""

    stands_for: str  # the `paper` profiles' corpus spec it replaces
    shard: str  # shard path inside the folder, formatted with the shard index
    meta: str  # extra row fields: "pile" ({"pile_set_name"}), "redpajama" (a JSON string) or "" (text only)
    seed: int  # order of the documents


STANDIN_CORPORA = {
    "pile": StandinCorpus("hf:monology/pile-uncopyrighted", "train/{:02d}.jsonl.zst", "pile", 1),
    "redpajama-sample": StandinCorpus("hf:togethercomputer/RedPajama-Data-1T-Sample@refs/convert/parquet",
                                      "plain_text/train/{:04d}.parquet", "redpajama", 2),
    "openwebtext": StandinCorpus("hf:Skylion007/openwebtext@refs/convert/parquet",
                                 "plain_text/partial-train/{:04d}.parquet", "", 3),
}
STANDIN_CHARS = 6_000_000  # text per stand-in (~1.5M SmolLM2 tokens; ~75K of them in held-out documents)
STANDIN_SHARDS = 4
STANDIN_DOC_CHARS = 4000  # documents are cut into pieces of at most this many characters
_STANDIN_VERSION = 1


def _pieces(text: str, limit: int) -> Iterator[str]:
    """`text` cut into pieces of at most `limit` characters, at a paragraph, sentence or word end when there is one."""
    while len(text) > limit:
        head = text[:limit]
        cut = max(head.rfind("\n\n"), head.rfind(". ") + 1, 0) or head.rfind(" ")
        cut = cut if cut > limit // 4 else limit
        yield head[:cut].strip()
        text = text[cut:].lstrip()
    if text.strip():
        yield text.strip()


def standin_documents(name: str, root: Path | None = None) -> list[tuple[str, str]]:
    """(source, text) of stand-in `name` in stream order: every Debian document cut into pieces
    (`STANDIN_DOC_CHARS`), shuffled under the stand-in's seed, the first `STANDIN_CHARS` characters' worth."""
    pieces = [(src, p) for src in SOURCES for d in documents(src, root) for p in _pieces(d, STANDIN_DOC_CHARS)]
    order = np.random.default_rng(STANDIN_CORPORA[name].seed).permutation(len(pieces))
    out, total = [], 0
    for i in order:
        if total >= STANDIN_CHARS:
            break
        out.append(pieces[i])
        total += len(pieces[i][1])
    return out


def _standin_fields(name: str) -> dict[str, Any]:
    sc = STANDIN_CORPORA[name]
    return {"standin": name, "stands_for": sc.stands_for, "shard": sc.shard, "meta": sc.meta, "seed": sc.seed,
            "chars": STANDIN_CHARS, "shards": STANDIN_SHARDS, "doc_chars": STANDIN_DOC_CHARS,
            "debian": DEBIAN_PACKAGES, "parser": _PARSER_VERSION}


def _standin_path(name: str) -> Path:
    """Where stand-in `name` is (or will be) built, without building it."""
    from .cache import artifact_path

    return artifact_path("corpus", _standin_fields(name), _STANDIN_VERSION)


def _standin_row(meta: str, source: str, text: str) -> dict[str, Any]:
    if meta == "pile":
        return {"text": text, "meta": {"pile_set_name": f"debian:{source}"}}
    if meta == "redpajama":
        return {"text": text, "meta": json.dumps({"source": f"debian:{source}"})}
    return {"text": text}


def standin_folder(name: str) -> Path:
    """The folder of stand-in corpus `name` (`STANDIN_CORPORA`), built from the Debian text on first use."""
    if name not in STANDIN_CORPORA:
        raise CorpusError(f"no stand-in corpus {name!r}; stand-ins: {list(STANDIN_CORPORA)}")
    sc = STANDIN_CORPORA[name]

    def compute(work: Path) -> dict:
        docs = standin_documents(name)
        bounds = np.linspace(0, len(docs), STANDIN_SHARDS + 1).astype(int)
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            rows = [_standin_row(sc.meta, src, text) for src, text in docs[lo:hi]]
            path = work / sc.shard.format(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.name.endswith(".jsonl.zst"):
                import zstandard

                blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
                path.write_bytes(zstandard.ZstdCompressor(level=3).compress(blob))
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pylist(rows), path)
        return {"documents": len(docs), "chars": sum(len(t) for _, t in docs)}

    return cached("corpus", _standin_fields(name), compute, version=_STANDIN_VERSION)


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


def token_stream(source: str, tokenizer: Any, tokenizer_id: str) -> np.ndarray:
    """Cached int32 token stream of one Debian source (documents joined by EOS)."""
    fields = {"source": source, "tokenizer": tokenizer_id, "parser": _PARSER_VERSION, "max_tokens": None}

    def compute(work: Path) -> dict:
        toks = _tokenize_stream(documents(source), tokenizer, None, source)
        np.save(work / "tokens.npy", toks)
        return {"n_tokens": int(toks.size)}

    path = cached("tokens", fields, compute)
    return np.load(path / "tokens.npy", mmap_mode="r")


def is_heldout_document(text: str) -> bool:
    """The document-level split of streamed corpora: BLAKE2b-64 of the UTF-8 text / 2⁶⁴ < HOLDOUT_FRAC."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return h < HOLDOUT_FRAC * 2.0**64


def row_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every token id fits (vocab ≤ 65,536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def allocated_bytes(path: Path) -> int:
    """Bytes a (possibly sparse) file already occupies on disk."""
    try:
        return path.stat().st_blocks * 512
    except OSError:
        return 0


def content_id(spec: CorpusSpec) -> str | None:
    """What an `hf:` corpus holds, for the cache keys of what is computed from it (`saesanity.content`): local
    files' digest or a hub dataset's resolved commit; None for the Debian text and the stand-ins (keyed by
    their build)."""
    if spec.kind != "hf" or spec.standin:
        return None
    from .content import local_or_hub

    return local_or_hub(spec.name, spec.revision, "dataset")


def token_rows(spec: CorpusSpec, tokenizer: Any, tokenizer_id: str, seq_len: int, n_rows: int, *,
               split: str = "train", progress: bool = True) -> np.ndarray:
    """[n_rows, seq_len] token rows (memmap, read-only) of split `split` of a streamed corpus.

    The split's documents (`is_heldout_document`) are joined by EOS in stream order and cut into
    consecutive `seq_len` windows; exactly `n_rows` are written. Cached under (source, tokenizer,
    seq_len, split, n_rows); an interrupted run resumes from its last saved row (documents already
    consumed are skipped, not tokenized again). Raises `CorpusError` when the source runs out.
    """
    if n_rows < 1:
        raise CorpusError(f"n_rows={n_rows}: need at least one row")
    eos = tokenizer.eos_token_id
    if eos is None:
        raise CorpusError("tokenizer has no EOS token to separate documents")
    dtype = row_dtype(len(tokenizer))
    fields = {"source": spec.describe(), "tokenizer": tokenizer_id, "seq_len": seq_len, "split": split,
              "n_rows": n_rows, "holdout_frac": HOLDOUT_FRAC, "dtype": dtype.name}
    if spec.standin:  # what the stand-in holds (its folder's content key, not where the cache is)
        fields["standin_key"] = Path(spec.name).name
    if (content := content_id(spec)) is not None:  # local files edited in place, a hub branch that moved
        fields["content"] = content

    def compute(work: Path) -> dict:
        path, prog = work / "rows.npy", work / "progress.json"
        state = {"rows": 0, "docs": 0, "carry": []}
        if path.exists() and prog.exists():
            rows = np.lib.format.open_memmap(path, mode="r+")
            state = json.loads(prog.read_text())
        need = n_rows * seq_len * dtype.itemsize - allocated_bytes(path)
        free = shutil.disk_usage(work).free
        if need > free:
            raise CorpusError(f"{n_rows:,} token rows of {seq_len} ({dtype.name}) need {human_bytes(need)} more; "
                              f"only {human_bytes(free)} free under {work}: free space or set SAESANITY_CACHE elsewhere")
        if state["rows"] == 0:
            rows = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, seq_len))
        done, seen, carry = state["rows"], state["docs"], np.asarray(state["carry"], dtype=np.int64)
        bar = tqdm(total=n_rows, initial=done, unit="row", disable=not progress,
                   desc=f"tokens {spec.describe()} ({split})")
        docs = (d for d in hf_documents(spec) if is_heldout_document(d) == (split == "heldout"))
        skip, batch, last = seen, [], time.perf_counter()
        for doc in docs:
            if skip:  # consumed before the interruption
                skip -= 1
                continue
            batch.append(doc)
            if len(batch) < 256:
                continue
            done, carry = _fill(rows, done, carry, tokenizer(batch, add_special_tokens=False)["input_ids"], eos)
            seen += len(batch)
            bar.update(done - bar.n)
            batch = []
            if done == n_rows:
                break
            if time.perf_counter() - last >= _SAVE_EVERY_S:
                rows.flush()
                _atomic_json(prog, {"rows": done, "docs": seen, "carry": carry.tolist()})
                last = time.perf_counter()
        if batch and done < n_rows:
            done, carry = _fill(rows, done, carry, tokenizer(batch, add_special_tokens=False)["input_ids"], eos)
            seen += len(batch)
        bar.update(done - bar.n)
        bar.close()
        if done < n_rows:
            raise CorpusError(f"corpus {spec.describe()!r} ({split}) ran out after {done:,} rows of {seq_len} tokens "
                              f"({seen:,} documents); {n_rows:,} were asked for")
        rows.flush()
        del rows
        prog.unlink(missing_ok=True)
        return {"documents": seen, "n_tokens": n_rows * seq_len}

    path = cached("token_rows", fields, compute, version=_ROWS_VERSION, resumable=True)
    return np.load(path / "rows.npy", mmap_mode="r")


def _fill(rows: np.ndarray, done: int, carry: np.ndarray, ids: list[list[int]], eos: int) -> tuple[int, np.ndarray]:
    """Append the documents `ids` (each followed by EOS) to `carry`, write its complete rows from row `done`."""
    stream = np.concatenate([carry] + [np.asarray(i + [eos], dtype=np.int64) for i in ids])
    seq_len = rows.shape[1]
    n = min(stream.size // seq_len, rows.shape[0] - done)
    rows[done:done + n] = stream[:n * seq_len].reshape(n, seq_len)
    return done + n, stream[n * seq_len:]


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def token_sequences(corpus: str, tokenizer: Any, tokenizer_id: str, seq_len: int, *, split: str = "train",
                    seed: int = 0, max_tokens: int | None = None, progress: bool = True) -> np.ndarray:
    """[n_seq, seq_len] token windows of `corpus`'s `split` (`train` or `heldout`).

    Debian corpora: every window of the split, in the order `seed` gives them (`window_indices`).
    Streamed (`hf:`) corpora: exactly ceil(max_tokens / seq_len) rows of the split in stream order
    (`token_rows`; `max_tokens` is required and `seed` unused).
    """
    if split not in ("train", "heldout"):
        raise CorpusError(f"split {split!r}; valid: 'train', 'heldout'")
    if seq_len < 2:
        raise CorpusError(f"seq_len={seq_len}: need at least 2 tokens per sequence")
    spec = parse_corpus(corpus)
    if spec.kind != "debian":
        if max_tokens is None:
            raise CorpusError("an hf: corpus needs max_tokens (how many tokens to stream)")
        return token_rows(spec, tokenizer, tokenizer_id, seq_len, -(-max_tokens // seq_len), split=split,
                          progress=progress)
    windows = []
    for src in spec.sources:
        stream = token_stream(src, tokenizer, tokenizer_id)
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
