"""Content keys (saesanity.content): an edited local model or dataset folder, or a moved hub branch, gives new
cache keys; the embedded models' keys do not depend on it."""

import shutil

import numpy as np
import pytest

from saesanity import activations, content, corpus, models


def _spec(model: str, corpus_spec: str = "debian") -> activations.ActivationSpec:
    return activations.ActivationSpec(model, "trained", corpus_spec, 1000, 64, 0)


def test_editing_a_local_model_folder_in_place_changes_the_activation_keys(tiny_llama_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, folder)
    spec = _spec(str(folder))
    before = activations.artifact_dirs(spec, ["mlp_out.0"])
    assert activations.key_fields(spec)["model_content"].startswith("sha256:")
    weights = next(folder.glob("*.safetensors"))
    original = weights.read_bytes()
    weights.write_bytes(original[:-4] + bytes(4))  # the last weights' bytes zeroed: same name, size and path
    assert activations.artifact_dirs(spec, ["mlp_out.0"]) != before
    assert models.tokenizer_id(str(folder)) != f"{folder}"  # token rows of an edited folder are not reused either
    weights.write_bytes(original)  # the same content again: the same key (content, not mtime)
    assert activations.artifact_dirs(spec, ["mlp_out.0"]) == before
    (folder / ".notes").write_text("hidden files are not content")
    assert activations.artifact_dirs(spec, ["mlp_out.0"]) == before


def test_embedded_models_and_corpora_keep_their_keys():
    fields = activations.key_fields(_spec("smollm2-135m"))
    assert "model_content" not in fields and "corpus_content" not in fields
    assert models.content_id("smollm2-tiny-random") is None and models.content_id("standin:gpt2") is None
    assert corpus.content_id(corpus.parse_corpus("standin:pile")) is None


def test_editing_a_local_dataset_gives_new_token_rows(iso_cache, tmp_path, tiny_llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(f'{{"text": "doc {i} says hello."}}' for i in range(400)))
    spec = corpus.parse_corpus(f"hf:{folder}")
    first = np.array(corpus.token_rows(spec, tok, "char", 16, 40, progress=False))
    (folder / "train.jsonl").write_text("\n".join(f'{{"text": "doc {i} says goodbye."}}' for i in range(400)))
    second = np.array(corpus.token_rows(spec, tok, "char", 16, 40, progress=False))
    assert not np.array_equal(first, second), "rows of the old file were reused after it was edited"
    assert len(list((iso_cache / "token_rows").glob("*[0-9a-f]"))) == 2
    fields = activations.key_fields(_spec("smollm2-135m", f"hf:{folder}"))
    assert fields["corpus_content"] == content.files_digest(folder)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    content.hub_commit.cache_clear()
    yield tmp_path / "hub"
    content.hub_commit.cache_clear()


def _ref(hub, repo, sha, revision="main", kind="models"):
    ref = hub / f"{kind}--{repo.replace('/', '--')}" / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(sha)


def test_a_moved_hub_branch_changes_the_key_and_a_pinned_commit_is_its_own(hub_cache, capsys):
    _ref(hub_cache, "EleutherAI/pythia-70m", "a" * 40)
    _ref(hub_cache, "EleutherAI/pythia-70m", "c" * 40, revision="step0")
    assert models.content_id("EleutherAI/pythia-70m") == "commit:" + "a" * 40
    assert models.content_id("EleutherAI/pythia-70m@step0") == "commit:" + "c" * 40
    key_a = activations.key_fields(_spec("EleutherAI/pythia-70m"))
    content.hub_commit.cache_clear()  # a later process, after `main` moved on the hub
    _ref(hub_cache, "EleutherAI/pythia-70m", "b" * 40)
    key_b = activations.key_fields(_spec("EleutherAI/pythia-70m"))
    assert key_a["model_content"] != key_b["model_content"] and key_a["model"] == key_b["model"]
    assert models.content_id("gpt2@" + "d" * 40) == "commit:" + "d" * 40  # pinned: no lookup
    _ref(hub_cache, "monology/pile-uncopyrighted", "e" * 40, kind="datasets")
    assert corpus.content_id(corpus.parse_corpus("hf:monology/pile-uncopyrighted")) == "commit:" + "e" * 40


def test_an_unresolvable_hub_revision_falls_back_to_the_name_and_says_so(hub_cache, capsys):
    assert models.content_id("EleutherAI/pythia-160m") is None
    assert "could not resolve model EleutherAI/pythia-160m@main to a commit" in capsys.readouterr().err
    assert "model_content" not in activations.key_fields(_spec("EleutherAI/pythia-160m"))
