"""SAE files: save in SAELens layout, load SAELens and sparsify folders.

SAELens layout: `cfg.json` (architecture, d_in, d_sae, k, dtype, device, apply_b_dec_to_input,
normalize_activations, metadata) and `sae_weights.safetensors` with `W_enc` [D, F], `b_enc` [F],
`W_dec` [F, D], `b_dec` [D]. `sae_lens.SAE.load_from_disk(folder)` loads it (tests check that the
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

from .topk import TopKSAE


class SAEFormatError(ValueError):
    pass


def save_saelens(sae: TopKSAE, folder: Path, metadata: dict[str, Any] | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": "topk",
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "k": sae.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "rescale_acts_by_decoder_norm": False,
        "metadata": metadata or {},
    }
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=1, sort_keys=True))
    state = {n: p.detach().contiguous().to(torch.float32) for n, p in sae.named_parameters()}
    save_file(state, folder / "sae_weights.safetensors")
    return folder


def _from_tensors(W_enc_DF, b_enc, W_dec_FD, b_dec, k: int) -> TopKSAE:
    d_in, d_sae = W_enc_DF.shape
    if W_dec_FD.shape != (d_sae, d_in):
        raise SAEFormatError(f"W_dec has shape {tuple(W_dec_FD.shape)}, expected {(d_sae, d_in)}")
    sae = TopKSAE(d_in, d_sae, k)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc_DF)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec_FD)  # kept as stored: a loaded decoder is not renormalised
        sae.b_dec.copy_(b_dec)
    return sae


def load_sae(folder: str | Path) -> TopKSAE:
    """Load a TopK SAE from a SAELens or sparsify folder (detected from the files present)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SAEFormatError(f"SAE folder {folder} does not exist")
    cfg_path = folder / "cfg.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    if (folder / "sae_weights.safetensors").exists():
        if cfg.get("architecture", "topk") != "topk":
            raise SAEFormatError(f"{folder}: SAELens architecture {cfg.get('architecture')!r}; only 'topk' loads here")
        st = load_file(folder / "sae_weights.safetensors")
        if cfg.get("normalize_activations", "none") != "none":
            raise SAEFormatError(f"{folder}: normalize_activations={cfg['normalize_activations']!r} is not supported")
        b_enc = st["b_enc"]
        if not cfg.get("apply_b_dec_to_input", True):  # x@W+b == (x-b_dec)@W + (b + b_dec@W)
            b_enc = b_enc + st["b_dec"] @ st["W_enc"]
        return _from_tensors(st["W_enc"], b_enc, st["W_dec"], st["b_dec"], int(cfg["k"]))
    if (folder / "sae.safetensors").exists():
        st = load_file(folder / "sae.safetensors")
        return _from_tensors(st["encoder.weight"].t(), st["encoder.bias"], st["W_dec"], st["b_dec"], int(cfg["k"]))
    files = sorted(p.name for p in folder.iterdir())
    raise SAEFormatError(f"{folder}: unknown SAE format (files {files}); expected SAELens "
                         "(cfg.json + sae_weights.safetensors) or sparsify (cfg.json + sae.safetensors)")
