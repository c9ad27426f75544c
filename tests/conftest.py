"""Shared fixtures. Tests never touch the network: models are built locally, data comes from the
Debian text that `make data` extracted, and each test gets its own cache directory (with the
Debian text and the built models linked in from the project cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from saesanity import paths

PROJECT_CACHE = paths.cache_dir()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def linked_cache(cache: Path) -> Path:
    """`cache`, created, with the project's Debian text, built models, token rows and stand-in corpora linked in."""
    cache.mkdir(parents=True, exist_ok=True)
    for shared in ("debian", "model", "tokens", "corpus"):
        if (PROJECT_CACHE / shared).exists() and not (cache / shared).exists():
            (cache / shared).symlink_to(PROJECT_CACHE / shared)
    return cache


@pytest.fixture
def iso_cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache dir for one test, sharing the project's Debian text, built models and stand-in corpora."""
    cache = linked_cache(tmp_path / "cache")
    monkeypatch.setenv("SAESANITY_CACHE", str(cache))
    monkeypatch.setenv("SAESANITY_FIGURES", str(tmp_path / "figures"))
    return cache


def _tiny_model(factory, name: str, model_cls, cfg) -> Path:
    torch.manual_seed(0)
    path = factory.mktemp(name)
    model_cls(cfg).save_pretrained(path)
    _save_char_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """3-layer Llama (tied embeddings), d_model 32, with a character tokenizer: a local stand-in."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True)
    return _tiny_model(tmp_path_factory, "tiny_llama", LlamaForCausalLM, cfg)


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory) -> Path:
    """3-layer GPT-NeoX (Pythia's family, untied unembedding), d_model 32: a local stand-in."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    cfg = GPTNeoXConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                        num_attention_heads=4, max_position_embeddings=128, tie_word_embeddings=False)
    return _tiny_model(tmp_path_factory, "tiny_neox", GPTNeoXForCausalLM, cfg)


def _save_char_tokenizer(path: Path) -> None:
    """A 97-symbol character-level fast tokenizer, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{chr(32 + i): i + 1 for i in range(95)}, "<unk>": 96}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", unk_token="<unk>").save_pretrained(path)
