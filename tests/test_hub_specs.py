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
