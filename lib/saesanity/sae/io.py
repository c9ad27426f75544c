"""SAE files: save in SAELens layout, load SAELens and sparsify folders.

SAELens layout: `cfg.json` (architecture, d_in, d_sae, dtype, device, apply_b_dec_to_input,
normalize_activations, metadata, and e.g. k for topk) and `sae_weights.safetensors` with `W_enc`
[D, F], `b_enc` [F], `W_dec` [F, D], `b_dec` [D], plus `threshold` [F] (jumprelu) or `b_gate`,
`r_mag`, `b_mag` instead of `b_enc` (gated). `sae_lens.SAE.load_from_disk(folder)` loads it (tests check that the
loaded SAE reproduces our encode/decode).

sparsify layout (EleutherAI): `cfg.json` (k, num_latents | expansion_factor, d_in) and
`sae.safetensors` with `encoder.weight` [F, D], `encoder.bias` [F], `W_dec` [F, D], `b_dec` [D];
the encoder is applied to x − b_dec, as ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .arch import FROM_SAELENS
from .base import SAEBase
from .topk import TopKSAE


class SAEFormatError(ValueError):
    pass


def save_saelens(sae: SAEBase, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `cfg.json` + `sae_weights.safetensors` (any architecture, in its SAELens form)."""
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
        "metadata": metadata or {},
    }
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    save_file(sae.saelens_state(), folder / "sae_weights.safetensors")
    return folder


def load_sae(folder: str | Path) -> SAEBase:
    """Load an SAE from a SAELens folder (topk, standard, gated, jumprelu) or a sparsify TopK folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAEFormatError(f"SAE folder {folder} does not exist")
    cfg_path = folder / "cfg.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    if (folder / "sae_weights.safetensors").exists():
        arch = cfg.get("architecture", "standard")
        if arch not in FROM_SAELENS:
            raise SAEFormatError(f"{folder}: SAELens architecture {arch!r}; supported: {sorted(FROM_SAELENS)}")
        if cfg.get("normalize_activations", "none") != "none":
            raise SAEFormatError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported")
        return FROM_SAELENS[arch].from_saelens(cfg, load_file(folder / "sae_weights.safetensors"))
    if (folder / "sae.safetensors").exists():
        st = load_file(folder / "sae.safetensors")
        state = {"W_enc": st["encoder.weight"].t().contiguous(), "b_enc": st["encoder.bias"], "W_dec": st["W_dec"],
                 "b_dec": st["b_dec"]}
        return TopKSAE.from_saelens({"k": cfg["k"]}, state)
    files = sorted(p.name for p in folder.iterdir())
    raise SAEFormatError(f"{folder}: unknown SAE format (files {files}); expected SAELens "
                         "(cfg.json + sae_weights.safetensors) or sparsify (cfg.json + sae.safetensors)")


def load_release(release: str, sae_id: str) -> SAEBase:
    """An SAE from a SAELens pretrained release (e.g. `gpt2-small-res-jb-feature-splitting`,
    `blocks.8.hook_resid_pre_768`), fetched by `sae_lens.SAE.from_pretrained` (needs the hub), written
    in SAELens's own layout and read back by `load_sae`."""
    import tempfile

    from sae_lens import SAE

    theirs = SAE.from_pretrained(release, sae_id, device="cpu")
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs  # sae_lens < 6 returned (sae, cfg, sparsity)
    with tempfile.TemporaryDirectory() as d:
        theirs.save_model(d)
        return load_sae(d)
