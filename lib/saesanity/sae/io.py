"""SAE files: save in SAELens layout; load SAELens, sparsify and dictionary_learning folders; hub names.

Formats read (`FORMATS`; `detect_format` tells them apart by their files):

* **SAELens** — `cfg.json` + `sae_weights.safetensors` with `W_enc` [D, F], `b_enc` [F], `W_dec` [F, D],
  `b_dec` [D], plus `threshold` [F] (jumprelu) or `b_gate`, `r_mag`, `b_mag` instead of `b_enc`
  (gated). v6 configs name the `architecture` (standard | topk | gated | jumprelu) and `k`;
  pre-6.0 configs say `activation_fn_str` ("relu" | "topk") with `activation_fn_kwargs: {k}`,
  `hook_point`, a boolean `normalize_activations`, and may carry `finetuning_scaling_factor` with a
  `scaling_factor` [F] tensor that multiplies the latents before decoding (folded here into the
  decoder rows: `W_dec[f] · s_f`, so decode(encode(x)) is unchanged). `apply_b_dec_to_input: false`
  (e.g. Gemma Scope) is folded into the encoder bias (x·W + b = (x − b_dec)·W + (b + b_dec·W)), so
  every loaded SAE subtracts `b_dec` before encoding, as ours do. Activation normalisation other than
  "none" is refused (the scale it needs is not in the folder). The TransformerLens weight processing the
  SAE was trained under (`model_from_pretrained_kwargs`, see `saelens_input_transform`) becomes the
  SAE's `input_transform`: `center_writing_weights` means every activation it saw was centred per token,
  which is folded into the encoder and kept as the reconstruction target (`base.fold_centering`).
  SAELens *training* checkpoints (`TrainingSAE.save_model`) load too: architecture `batchtopk` /
  `matryoshka_batchtopk` with their scalar `topk_threshold` become the JumpReLU SAE (θ on every latent)
  their `save_inference_model` writes; `rescale_acts_by_decoder_norm` (their TopK/BatchTopK default) is
  folded exactly (W_enc, b_enc scaled by ‖W_dec[f]‖, decoder rows made unit) and refused for other
  architectures; an older `log_threshold` is exponentiated.
* **sparsify** (EleutherAI) — `cfg.json` (k, num_latents | expansion_factor, d_in, activation,
  transcode, skip_connection) + `sae.safetensors` with `encoder.weight` [F, D], `encoder.bias` [F],
  `W_dec` [F, D] (unit-norm rows), `b_dec` [D]. Latents: top-k of ReLU((x − b_dec)·Wᵀ + b) — the same
  set and values as ReLU of the top-k pre-activations (ours). A training run keeps one folder per
  hookpoint, `<hookpoint>/seed<N>/` when several seeds were trained (`init_seeds`). Transcoders,
  skip connections and `groupmax` are refused: they are not autoencoders of the form above.
* **dictionary_learning** (saprmarks) — `ae.pt` (a state dict) + `config.json` whose `trainer.dict_class`
  names the class: `AutoEncoder` (ReLU; keys `encoder.*`, `decoder.weight` [D, F], `bias` = b_dec;
  loaded with its decoder normalised and the norms moved into the encoder, as their
  `from_pretrained` does), `AutoEncoderNew` (ReLU, no input bias), `GatedAutoEncoder`,
  `JumpReluAutoEncoder` (their default: b_dec not subtracted), `AutoEncoderTopK` (k from the config),
  `BatchTopKSAE` and `MatryoshkaBatchTopKSAE` (inference: ReLU(pre)·[ReLU(pre) > θ] with one scalar θ,
  i.e. a JumpReLU with θ on every latent, or a plain ReLU SAE while θ < 0 is unset; a Matryoshka SAE keeps its
  levels, the cumulative `group_sizes`, as `nested_widths`).

A SAELens config with `matryoshka_widths` (SAELens' Matryoshka field; `save_saelens` writes it for ours) gives the
SAE its `nested_widths` too; a nested dictionary loaded without them is read as a flat one.

Every format is converted to SAELens names and read by the architecture class's `from_saelens`.
`find_saes` lists the SAE folders under a directory (a sparsify run's hookpoints or seeds);
`resolve` turns a local path, an HF hub repository (`hf:owner/name[:subfolder]`, or a bare
`owner/name` that is not a local path) or a SAELens release (`sae_lens:<release>:<sae_id>`) into
SAEs through these same loaders.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .arch import FROM_SAELENS
from .base import INPUT_TRANSFORMS, SAEBase, fold_centering, fold_input_bias


class SAEFormatError(ValueError):
    pass


FORMATS = {
    "saelens": "SAELens: cfg.json + sae_weights.safetensors (v6 and pre-6.0 configs)",
    "sparsify": "EleutherAI sparsify: cfg.json + sae.safetensors (a run keeps <hookpoint>/ or <hookpoint>/seedN/ folders)",
    "dictionary_learning": "dictionary_learning: ae.pt + config.json (trainer.dict_class)",
}
_MARKERS = {"saelens": ("cfg.json", "sae_weights.safetensors"), "sparsify": ("cfg.json", "sae.safetensors"),
            "dictionary_learning": ("ae.pt", "config.json")}


def save_saelens(sae: SAEBase, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (any architecture, in its SAELens form); an SAE with
    an `input_transform` other than "none" (its encoder already folded), a known `hookpoint` or Matryoshka levels
    (`nested_widths`, as SAELens' `matryoshka_widths`, the full width last) keeps them under those keys, which
    `load_sae` reads back and SAELens' inference configs ignore."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": sae.architecture,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        **sae.saelens_cfg(),
        **({"input_transform": sae.input_transform} if sae.input_transform != "none" else {}),
        **({"hookpoint": sae.hookpoint} if sae.hookpoint else {}),
        **({"matryoshka_widths": list(sae.nested_widths)} if sae.nested_widths else {}),
        "metadata": metadata or {},
    }
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    save_file(sae.saelens_state(), folder / "sae_weights.safetensors")
    return folder


def _formats_line() -> str:
    return "; ".join(FORMATS.values())


def detect_format(folder: str | Path) -> str | None:
    """'saelens' | 'sparsify' | 'dictionary_learning' by the files in `folder`, or None."""
    folder = Path(folder)
    for name, files in _MARKERS.items():
        if all((folder / f).is_file() for f in files):
            return name
    return None


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def find_saes(root: str | Path, max_depth: int = 3) -> dict[str, Path]:
    """name -> folder of every SAE at or under `root` (depth ≤ max_depth), naturally sorted by the path
    relative to root (`layers.6/seed0`, `layers.6/seed1`, …; `root`'s own name if root is one SAE)."""
    root = Path(root)
    if not root.is_dir():
        raise SAEFormatError(f"SAE folder {root} does not exist")
    if detect_format(root):
        return {root.name: root}
    found = {}
    frontier = [root]
    for _ in range(max_depth):
        nxt = []
        for d in frontier:
            for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if detect_format(sub):
                    found[sub.relative_to(root).as_posix()] = sub
                else:
                    nxt.append(sub)
        frontier = nxt
    return {k: found[k] for k in sorted(found, key=_natural)}


def load_sae(folder: str | Path, format: str | None = None) -> SAEBase:
    """Load the SAE in `folder`, its format detected from the files (or given as `format`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAEFormatError(f"SAE folder {folder} does not exist")
    fmt = format or detect_format(folder)
    if fmt is None:
        inside = find_saes(folder)
        if inside:
            raise SAEFormatError(f"{folder} holds {len(inside)} SAEs ({', '.join(list(inside)[:8])}"
                                 f"{', …' if len(inside) > 8 else ''}); load one folder, or all with load_saes")
        files = sorted(p.name for p in folder.iterdir())
        raise SAEFormatError(f"{folder}: unknown SAE format (files {files}); formats read: {_formats_line()}")
    if fmt not in FORMATS:
        raise SAEFormatError(f"format {fmt!r}; valid: {list(FORMATS)}")
    return check_loaded(_LOADERS[fmt](folder), folder)


# the shape of each per-latent / per-input tensor an SAE may hold, from (d_in, d_sae)
_SHAPES = {"W_enc": lambda d, f: (d, f), "W_dec": lambda d, f: (f, d), "b_dec": lambda d, f: (d,),
           **dict.fromkeys(["b_enc", "b_gate", "r_mag", "b_mag", "log_threshold"], lambda d, f: (f,))}


def check_loaded(sae: SAEBase, where: Path | str) -> SAEBase:
    """`sae` if every tensor has the shape its d_in × d_sae implies and holds finite values (BatchTopK's
    threshold may be NaN: not calibrated yet); an `SAEFormatError` naming the tensor otherwise — a broadcastable
    wrong shape (a b_dec of [1]) or a NaN weight would otherwise run and give wrong numbers."""
    d, f = sae.d_in, sae.d_sae
    for name, t in sae.state_dict().items():
        want = _SHAPES.get(name)
        if want is not None and tuple(t.shape) != want(d, f):
            raise SAEFormatError(f"{where}: {name} has shape {list(t.shape)}; a {d}-input, {f}-latent SAE needs "
                                 f"{list(want(d, f))}")
        if t.is_floating_point() and name != "threshold" and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise SAEFormatError(f"{where}: {name} holds {bad:,} NaN/inf value(s)")
    return sae


def load_saes(root: str | Path) -> dict[str, SAEBase]:
    """name -> SAE for every SAE folder at or under `root` (`find_saes`)."""
    found = find_saes(root)
    if not found:
        files = sorted(p.name for p in Path(root).iterdir())
        raise SAEFormatError(f"{root}: no SAE found (files {files}); formats read: {_formats_line()}")
    return {name: load_sae(path) for name, path in found.items()}


def _read_json(path: Path) -> dict:
    """A config file's JSON object; an SAEFormatError naming the file when it is not valid JSON or not an object."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SAEFormatError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SAEFormatError(f"{path}: expected a JSON object of settings, got a {type(data).__name__}")
    return data


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; an SAEFormatError naming the file when it is truncated or not safetensors."""
    from safetensors import SafetensorError

    try:
        return load_file(path)
    except SafetensorError as err:
        size = path.stat().st_size
        raise SAEFormatError(f"{path}: not a readable safetensors file ({size:,} bytes; {err}): truncated or "
                             "not safetensors") from None


def _read_torch(path: Path) -> Any:
    """A torch-saved state dict, weights only (no code in the file runs); an SAEFormatError naming the file."""
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SAEFormatError(f"{path}: not a readable weights-only torch file ({first})") from None


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _build(arch: str, cfg: dict, state: dict[str, torch.Tensor], where: Path) -> SAEBase:
    if arch not in FROM_SAELENS:
        raise SAEFormatError(f"{where}: architecture {arch!r}; supported: {sorted(FROM_SAELENS)}")
    for name, t in state.items():
        if name in _SHAPES and not t.is_floating_point():
            raise SAEFormatError(f"{where}: {name} holds {str(t.dtype).removeprefix('torch.')} values; SAE weights "
                                 "are floating point")
    for key, dim, axis in (("d_in", "W_enc", 0), ("d_sae", "W_enc", 1)):
        if key in cfg and dim in state and cfg[key] != state[dim].shape[axis]:
            raise SAEFormatError(f"{where}: the config says {key}={cfg[key]!r} but {dim} has shape "
                                 f"{list(state[dim].shape)}")
    try:
        return FROM_SAELENS[arch].from_saelens(cfg, state)
    except KeyError as e:
        raise SAEFormatError(f"{where}: weights lack {e.args[0]!r} for a {arch} SAE (have {sorted(state)})") from None
    except ValueError as e:  # a tensor of the wrong shape
        raise SAEFormatError(f"{where}: {e}") from None


# ---------------------------------------------------------------- SAELens

def saelens_v6_cfg(cfg: dict) -> dict:
    """A SAELens config in v6 terms: pre-6.0 keys mapped (activation_fn_str "topk" + activation_fn_kwargs.k
    -> architecture "topk" with k; boolean normalize_activations -> "none" | "expected_average_only_in");
    a v6 config comes back unchanged."""
    out = dict(cfg)
    act = out.pop("activation_fn_str", None) or out.get("activation_fn")
    if act not in (None, "relu", "topk"):
        raise SAEFormatError(f"SAELens activation function {act!r} is not supported (relu, topk)")
    out.setdefault("architecture", "standard")
    if act == "topk":
        k = (out.get("activation_fn_kwargs") or {}).get("k", out.get("k"))
        if k is None:
            raise SAEFormatError("SAELens config has activation_fn topk but no activation_fn_kwargs.k")
        out["architecture"], out["k"] = "topk", int(k)
    norm = out.get("normalize_activations", "none")
    out["normalize_activations"] = ("expected_average_only_in" if norm else "none") if isinstance(norm, bool) \
        else (norm or "none")
    out.setdefault("apply_b_dec_to_input", True)
    return out


# TransformerLens's weight processing (`HookedTransformer.from_pretrained` flags; SAELens loads the model with
# `from_pretrained_no_processing(**model_from_pretrained_kwargs)`, so exactly the flags given are applied), and
# what each does to the activations at the hookpoints we collect (`activations.HOOK_KINDS`), checked against
# TransformerLens itself in tests/test_sae_io.py:
TL_PROCESSING = {
    "center_writing_weights": "every write to the residual stream (W_E, W_pos, W_O, b_O, W_out, b_out) minus "
                              "its mean over d_model, so resid_pre/resid_post/attn_out/mlp_out are centred per "
                              "token (LayerNorm models only; TransformerLens skips it for RMSNorm ones)",
    "fold_ln": "LayerNorm scales and biases folded into the next linear map: none of the four changes",
    "center_unembed": "W_U centred: only the logits change",
    "fold_value_biases": "b_V moved into b_O (attention patterns sum to 1): attn_out is unchanged, hook_z is not",
    "refactor_factored_attn_matrices": "W_Q/W_K and W_V/W_O refactored with the same products: attn_out unchanged",
}
# keys that only place or cast the model (the activations are the same up to precision)
_NEUTRAL_KWARGS = ("n_devices", "device", "device_map", "dtype", "torch_dtype", "trust_remote_code")
_TL_HOOK = re.compile(r"blocks\.(\d+)\.hook_(resid_pre|resid_post|mlp_out|attn_out)")
_LAYERNORM_MODELS = re.compile(r"(openai-community/)?gpt2(-small|-medium|-large|-xl)?")  # verified: GPT-2


def saelens_input_transform(cfg: dict, where: Any = "SAELens config") -> tuple[str, str | None]:
    """(input_transform, hookpoint) of a SAELens config (v6: under `metadata`; pre-6.0: top level).

    hookpoint is our name (`resid_pre.8`) for a TransformerLens hook `blocks.L.hook_<kind>` with kind in
    resid_pre | resid_post | mlp_out | attn_out, else None. input_transform is "center" when
    `model_from_pretrained_kwargs.center_writing_weights` is true on a GPT-2 model at one of those hooks
    (the activations there are then the raw ones centred per token, `TL_PROCESSING`), else "none".
    Refused, naming the flag and the hook: a processing flag that is on at any other hook (e.g. hook_z,
    which fold_value_biases changes), center_writing_weights on a model not known to use LayerNorm, and any
    key that is neither a processing flag nor placement/precision (`_NEUTRAL_KWARGS`)."""
    meta = {**cfg, **(cfg.get("metadata") or {})}
    hook = meta.get("hook_name") or meta.get("hook_point")
    m = _TL_HOOK.fullmatch(hook or "")
    hookpoint = f"{m.group(2)}.{m.group(1)}" if m else None
    kwargs = meta.get("model_from_pretrained_kwargs") or {}
    for key, value in kwargs.items():
        if key not in TL_PROCESSING and key not in _NEUTRAL_KWARGS:
            raise SAEFormatError(f"{where}: model_from_pretrained_kwargs {key}={value!r} (hook {hook!r}) is not "
                                 f"supported: its effect on the activations is not known here; supported: "
                                 f"{sorted(TL_PROCESSING) + list(_NEUTRAL_KWARGS)}")
    on = [f for f in TL_PROCESSING if kwargs.get(f)]
    if not on:
        return "none", hookpoint
    if hookpoint is None:
        raise SAEFormatError(f"{where}: model_from_pretrained_kwargs {on[0]}=true at hook {hook!r} is not "
                             "supported: its effect is reproduced only at blocks.L.hook_resid_pre, hook_resid_post, "
                             "hook_mlp_out and hook_attn_out")
    if not kwargs.get("center_writing_weights"):
        return "none", hookpoint
    model = meta.get("model_name")
    if not _LAYERNORM_MODELS.fullmatch(str(model or "")):
        raise SAEFormatError(f"{where}: center_writing_weights=true at hook {hook!r} for model {model!r} is not "
                             "supported: TransformerLens centres the writing weights of LayerNorm models only, and "
                             "that is known here for GPT-2 (gpt2, gpt2-small, gpt2-medium, gpt2-large, gpt2-xl)")
    return "center", hookpoint


def _load_saelens(folder: Path) -> SAEBase:
    cfg = saelens_v6_cfg(_read_json(folder / "cfg.json"))
    transform, hookpoint = saelens_input_transform(cfg, folder)
    saved = cfg.get("input_transform")  # written by save_saelens (encoder already folded; folding is idempotent)
    if saved is not None:
        if saved not in INPUT_TRANSFORMS:
            raise SAEFormatError(f"{folder}: input_transform={saved!r}; valid: {list(INPUT_TRANSFORMS)}")
        if transform != "none" and saved != transform:
            raise SAEFormatError(f"{folder}: input_transform={saved!r} but its model_from_pretrained_kwargs "
                                 f"imply {transform!r}")
        transform = saved
    if cfg["normalize_activations"] != "none":
        raise SAEFormatError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported "
                             "(the scale it divides activations by is not stored in the folder)")
    state = _float_state(_read_safetensors(folder / "sae_weights.safetensors"))
    arch = cfg["architecture"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        if arch not in ("topk", *SAELENS_TRAINING_BATCHTOPK):
            raise SAEFormatError(f"{folder}: rescale_acts_by_decoder_norm=true is supported for TopK and BatchTopK "
                                 f"SAEs (where it is folded exactly), not for architecture {arch!r}")
        state = fold_decoder_norm(state, folder)
    if arch in SAELENS_TRAINING_BATCHTOPK:
        state, arch = batchtopk_as_jumprelu(state, folder), "jumprelu"
    if "log_threshold" in state and "threshold" not in state:  # a JumpReLU training checkpoint of older SAELens
        state["threshold"] = state.pop("log_threshold").exp()
    scale = state.pop("scaling_factor", None)
    if scale is not None and not torch.allclose(scale, torch.ones_like(scale)):
        if not cfg.get("finetuning_scaling_factor"):
            raise SAEFormatError(f"{folder}: scaling_factor is stored but finetuning_scaling_factor is false")
        state["W_dec"] = state["W_dec"] * scale[:, None]  # decode(z·s) = (z·s)·W_dec + b = z·(s ⊙ W_dec) + b
    if transform == "center":
        if not cfg["apply_b_dec_to_input"]:  # fold_centering assumes the encoder subtracts b_dec
            state, cfg = fold_input_bias(state), {**cfg, "apply_b_dec_to_input": True}
        state = fold_centering(state)
    sae = _build(arch, cfg, state, folder)
    sae.input_transform = transform
    sae.hookpoint = hookpoint or cfg.get("hookpoint")
    if cfg.get("matryoshka_widths"):  # SAELens' Matryoshka field, kept by save_saelens
        sae.nested_widths = nested_widths(cfg["matryoshka_widths"], sae.d_sae, folder)
    return sae


# SAELens training checkpoints (`TrainingSAE.save_model`) of its BatchTopK family: the same encoder and decoder as
# the inference SAE its `save_inference_model` writes, a JumpReLU with one threshold on every latent, but with the
# scalar `topk_threshold` buffer instead (and, by default, `rescale_acts_by_decoder_norm`)
SAELENS_TRAINING_BATCHTOPK = ("batchtopk", "matryoshka_batchtopk")


def fold_decoder_norm(state: dict[str, torch.Tensor], where: Path | str) -> dict[str, torch.Tensor]:
    """SAELens' `rescale_acts_by_decoder_norm` folded into the weights: their encoder selects on
    (x·W_enc + b_enc)·‖W_dec[f]‖ and their decoder divides each latent by ‖W_dec[f]‖ again, which is exactly the SAE
    with W_enc, b_enc scaled by the row norms n_f and W_dec rows divided by them (their `fold_W_dec_norm`); a
    threshold stays, as it is in the rescaled units already."""
    n = state["W_dec"].norm(dim=-1)
    if not bool((n > 0).all()):
        raise SAEFormatError(f"{where}: rescale_acts_by_decoder_norm with {int((n == 0).sum())} zero decoder rows")
    return {**state, "W_enc": state["W_enc"] * n, "b_enc": state["b_enc"] * n, "W_dec": state["W_dec"] / n[:, None]}


def batchtopk_as_jumprelu(state: dict[str, torch.Tensor], where: Path | str) -> dict[str, torch.Tensor]:
    """A SAELens BatchTopK / Matryoshka BatchTopK training checkpoint as the JumpReLU SAE their
    `save_inference_model` writes: `threshold` [F] = the scalar `topk_threshold` on every latent."""
    if "topk_threshold" not in state:
        raise SAEFormatError(f"{where}: a BatchTopK training checkpoint without its topk_threshold (have "
                             f"{sorted(state)}): the inference threshold is not known")
    out = dict(state)
    t = out.pop("topk_threshold")
    if t.numel() != 1:
        raise SAEFormatError(f"{where}: topk_threshold has shape {list(t.shape)}; SAELens keeps one scalar")
    out["threshold"] = torch.full_like(out["b_enc"], float(t))
    return out


def nested_widths(widths, d_sae: int, where: Path | str) -> tuple[int, ...]:
    """A Matryoshka SAE's levels as (m_1, …, d_sae): strictly increasing positive integers; a list without the
    full width gets it appended (as SAELens' trainer does). An SAEFormatError naming the file otherwise."""
    try:
        ws = [int(w) for w in widths]
        if any(w != x for w, x in zip(ws, widths)):
            raise TypeError
    except (TypeError, ValueError):
        raise SAEFormatError(f"{where}: matryoshka widths {widths!r} are not a list of integers") from None
    if ws and ws[-1] != d_sae:
        ws.append(d_sae)
    if ws[0] < 1 or ws != sorted(set(ws)) or ws[-1] != d_sae:
        raise SAEFormatError(f"{where}: matryoshka widths {list(widths)}: need strictly increasing levels in "
                             f"1..{d_sae} (the SAE has {d_sae} latents)")
    return tuple(ws)


# ---------------------------------------------------------------- sparsify

def _load_sparsify(folder: Path) -> SAEBase:
    cfg = _read_json(folder / "cfg.json")
    for flag, why in (("transcode", "a transcoder (predicts another activation), not an autoencoder"),
                      ("skip_connection", "has a linear skip connection W_skip")):
        if cfg.get(flag):
            raise SAEFormatError(f"{folder}: sparsify {flag}=true is not supported: {why}")
    if cfg.get("activation", "topk") != "topk":
        raise SAEFormatError(f"{folder}: sparsify activation {cfg['activation']!r} is not supported (topk)")
    if "k" not in cfg:
        raise SAEFormatError(f"{folder}: sparsify cfg.json has no k")
    st = _float_state(_read_safetensors(folder / "sae.safetensors"))
    if "W_dec" not in st:
        raise SAEFormatError(f"{folder}: sae.safetensors has no W_dec (saved without a decoder)")
    state = {"W_enc": st["encoder.weight"].t().contiguous(), "b_enc": st["encoder.bias"], "W_dec": st["W_dec"],
             "b_dec": st["b_dec"]}
    if "d_in" in cfg and cfg["d_in"] != state["W_enc"].shape[0]:
        raise SAEFormatError(f"{folder}: cfg d_in={cfg['d_in']} but encoder.weight has {state['W_enc'].shape[0]} columns")
    return _build("topk", {"k": cfg["k"]}, state, folder)


# ---------------------------------------------------------------- dictionary_learning

def _dl_linear_state(st: dict, b_dec_key: str) -> dict:
    """encoder.weight [F, D], decoder.weight [D, F] (nn.Linear layout) -> SAELens names."""
    out = {"W_enc": st["encoder.weight"].t().contiguous(), "W_dec": st["decoder.weight"].t().contiguous(),
           "b_dec": st[b_dec_key]}
    if "encoder.bias" in st:
        out["b_enc"] = st["encoder.bias"]
    return out


def _load_dictionary_learning(folder: Path) -> SAEBase:
    config = _read_json(folder / "config.json")
    trainer = config.get("trainer", {})
    cls = trainer.get("dict_class")
    st = _read_torch(folder / "ae.pt")
    if isinstance(st, dict) and isinstance(st.get("ae"), dict):
        raise SAEFormatError(f"{folder}: ae.pt is a training backup (step {st.get('step')}), not a finished SAE; "
                             "its biases may still be in the normalised-activation scale")
    st = _float_state(st)
    cfg: dict[str, Any] = {"apply_b_dec_to_input": True}
    if cls == "AutoEncoder":
        state = _dl_linear_state(st, "bias")
        norms = state["W_dec"].norm(dim=1)  # their from_pretrained normalises the decoder, output unchanged
        state = {**state, "W_dec": state["W_dec"] / norms[:, None], "W_enc": state["W_enc"] * norms,
                 "b_enc": state["b_enc"] * norms}
        return _build("standard", cfg, state, folder)
    if cls == "AutoEncoderNew":
        return _build("standard", {"apply_b_dec_to_input": False}, _dl_linear_state(st, "decoder.bias"), folder)
    if cls == "GatedAutoEncoder":
        state = {**_dl_linear_state(st, "decoder_bias"), "b_gate": st["gate_bias"], "r_mag": st["r_mag"],
                 "b_mag": st["mag_bias"]}
        return _build("gated", cfg, state, folder)
    if cls == "JumpReluAutoEncoder":
        state = {k: st[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")}
        return _build("jumprelu", {"apply_b_dec_to_input": bool(trainer.get("apply_b_dec_to_input", False))},
                      state, folder)
    if cls == "AutoEncoderTopK":
        k = trainer.get("k", int(st["k"]) if "k" in st else None)
        return _build("topk", {**cfg, "k": k}, _dl_linear_state(st, "b_dec"), folder)
    if cls in ("BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        state = _dl_linear_state(st, "b_dec") if "encoder.weight" in st else \
            {k: st[k] for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        theta = float(st.get("threshold", torch.tensor(-1.0)))
        if theta < 0:  # never set: their use_threshold path keeps every positive pre-activation
            sae = _build("standard", cfg, state, folder)
        else:
            sae = _build("jumprelu", cfg, {**state, "threshold": torch.full_like(state["b_enc"], theta)}, folder)
        if cls == "MatryoshkaBatchTopKSAE":  # its levels: the cumulative sums of the `group_sizes` buffer
            if "group_sizes" not in st:
                raise SAEFormatError(f"{folder}: a MatryoshkaBatchTopKSAE state without its group_sizes buffer")
            sae.nested_widths = nested_widths(torch.cumsum(st["group_sizes"].long(), 0).tolist(), sae.d_sae, folder)
        return sae
    known = ["AutoEncoder", "AutoEncoderNew", "GatedAutoEncoder", "JumpReluAutoEncoder", "AutoEncoderTopK",
             "BatchTopKSAE", "MatryoshkaBatchTopKSAE"]
    raise SAEFormatError(f"{folder}: dictionary_learning dict_class {cls!r}; supported: {known}")


_LOADERS = {"saelens": _load_saelens, "sparsify": _load_sparsify, "dictionary_learning": _load_dictionary_learning}


# ---------------------------------------------------------------- hub names

def load_release(release: str, sae_id: str) -> SAEBase:
    """An SAE from a SAELens pretrained release (e.g. `gpt2-small-res-jb-feature-splitting`,
    `blocks.8.hook_resid_pre_768`), fetched by `sae_lens.SAE.from_pretrained` (needs the hub), written
    in SAELens's own layout and read back by `load_sae`, so the release's config overrides (for the GPT-2
    `-jb` releases `model_from_pretrained_kwargs: {center_writing_weights: true}`, in SAELens's
    pretrained_saes.yaml) become the SAE's `input_transform` (`saelens_input_transform`)."""
    import tempfile

    from sae_lens import SAE

    theirs = SAE.from_pretrained(release, sae_id, device="cpu")
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs  # sae_lens < 6 returned (sae, cfg, sparsity)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_model(d)
        return load_sae(d)


def download_repo(repo: str, subfolder: str | None = None) -> Path:
    """Local folder of an HF hub repository (only `subfolder`'s files when given), via huggingface_hub."""
    from huggingface_hub import snapshot_download

    pattern = f"{subfolder.strip('/')}/*" if subfolder else None
    path = Path(snapshot_download(repo, allow_patterns=pattern))
    return path / subfolder if subfolder else path


SOURCE_HELP = ("a local folder (one SAE, or a run holding several: hookpoint or seedN/ subfolders), "
               "hf:<owner>/<repo>[:<subfolder>] (or a bare <owner>/<repo>), or sae_lens:<release>:<sae_id>")


def resolve(source: str, subfolder: str | None = None) -> dict[str, SAEBase]:
    """name -> SAE for a source string (`SOURCE_HELP`); local folders and hub downloads go through `load_saes`."""
    if source.startswith("sae_lens:"):
        parts = source.split(":", 2)
        if len(parts) != 3 or not all(parts[1:]):
            raise SAEFormatError(f"{source!r}: a SAELens source is sae_lens:<release>:<sae_id>")
        return {parts[2]: load_release(parts[1], parts[2])}
    local = Path(source).expanduser()
    if local.exists():
        return load_saes(local / subfolder if subfolder else local)
    spec = source.removeprefix("hf:")
    repo, _, sub = spec.partition(":")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise SAEFormatError(f"{source!r} is neither an existing folder nor a hub source; expected {SOURCE_HELP}")
    sub = "/".join(p for p in (sub, subfolder) if p) or None
    return load_saes(download_repo(repo, sub))
