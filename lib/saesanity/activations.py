"""Named hookpoints on raw Hugging Face modules and a memory-mapped activation cache.

Hookpoint names (L = 0-based decoder layer index):
- `resid_pre.L`  — input of decoder layer L (the residual stream before it)
- `resid_post.L` — output hidden state of decoder layer L
- `mlp_out.L`    — output of layer L's MLP block (before it is added to the residual stream)
- `attn_out.L`   — output of layer L's attention block (before it is added)

No TransformerLens-style weight processing is applied. The decoder layers are found as the model's
`nn.ModuleList` of length `num_hidden_layers` (Llama: `model.layers`, GPT-NeoX: `gpt_neox.layers`,
GPT-2: `transformer.h`), the MLP as its child `mlp`, the attention as `self_attn`/`attention`/`attn`.
The forward pass runs the base model (no LM head) and is stopped by an exception right after the
deepest requested layer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.std import tqdm  # text bars: widget bars do not render in executed notebooks on GitHub

from .cache import cached_many, human_bytes
from .corpus import allocated_bytes, parse_corpus, token_sequences
from .corpus import content_id as corpus_content
from .models import GaussianEmbedding, LoadedModel, load_model
from .models import content_id as model_content

HOOK_KINDS = ("resid_pre", "resid_post", "mlp_out", "attn_out")
_ATTN_NAMES = ("self_attn", "attention", "attn")
_VERSION = 1
_SAVE_EVERY_S = 30.0  # how often an in-progress collection records what it has written


class HookpointError(ValueError):
    pass


class ActivationError(ValueError):
    pass


@dataclass(frozen=True)
class Hookpoint:
    kind: str
    layer: int

    def __str__(self) -> str:
        return f"{self.kind}.{self.layer}"


def parse_hookpoint(name: str, n_layers: int | None = None, model_name: str = "the model") -> Hookpoint:
    """`mlp_out.6` -> Hookpoint; a HookpointError for any other spelling, or (given the model's `n_layers`) a layer
    the model does not have."""
    m = re.fullmatch(r"([a-z_]+)\.(0|[1-9]\d*)", name)  # one spelling per hookpoint: mlp_out.2, not mlp_out.02
    if not m or m.group(1) not in HOOK_KINDS:
        raise HookpointError(f"hookpoint {name!r} is not valid; expected one of {[k + '.L' for k in HOOK_KINDS]} "
                             f"with L a layer index (0, 1, 2, ...)")
    layer = int(m.group(2))
    if n_layers is not None and not 0 <= layer < n_layers:
        raise HookpointError(f"hookpoint {name!r} does not exist; {model_name} has layers 0–{n_layers - 1}")
    return Hookpoint(m.group(1), layer)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    n = model.config.num_hidden_layers
    for mod in model.modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n:
            return mod
    raise HookpointError(f"could not find the {n} decoder layers of {type(model).__name__}")


def _block(layer: nn.Module, kind: str) -> nn.Module:
    if kind == "mlp_out":
        if hasattr(layer, "mlp"):
            return layer.mlp
    else:
        for name in _ATTN_NAMES:
            if hasattr(layer, name):
                return getattr(layer, name)
    raise HookpointError(f"{type(layer).__name__} has no {'mlp' if kind == 'mlp_out' else 'attention'} block")


class _Stop(Exception):
    pass


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def run_to_hookpoints(lm: LoadedModel, input_ids: torch.Tensor, hookpoints: list[str]) -> dict[str, torch.Tensor]:
    """Activations [B, T, d] at each hookpoint; the forward pass stops after the deepest layer needed."""
    hps = [parse_hookpoint(h, lm.n_layers, lm.name) for h in hookpoints]
    layers = decoder_layers(lm.model)
    out: dict[str, torch.Tensor] = {}
    handles = []

    def saver(key):
        return lambda mod, args, output: out.__setitem__(key, _first(output).detach())

    for hp in hps:
        layer = layers[hp.layer]
        if hp.kind == "resid_pre":
            handles.append(layer.register_forward_pre_hook(
                lambda mod, args, kwargs, key=str(hp): out.__setitem__(
                    key, (args[0] if args else kwargs["hidden_states"]).detach()), with_kwargs=True))
        elif hp.kind == "resid_post":
            handles.append(layer.register_forward_hook(saver(str(hp))))
        else:
            handles.append(_block(layer, hp.kind).register_forward_hook(saver(str(hp))))

    def stop(mod, args, output):
        raise _Stop

    handles.append(layers[max(hp.layer for hp in hps)].register_forward_hook(stop))
    try:
        with torch.no_grad():
            lm.model.base_model(input_ids=input_ids, use_cache=False)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return {h: out[h] for h in hookpoints}


def _replace_output(output, new):
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


@contextlib.contextmanager
def replaced(lm: LoadedModel, hookpoint: str, fn):
    """Within the block, the activation at `hookpoint` [B, T, d] is replaced by `fn(activation)` in every
    forward pass of `lm` (a splice: the rest of the model runs on the replacement)."""
    hp = parse_hookpoint(hookpoint, lm.n_layers, lm.name)
    layer = decoder_layers(lm.model)[hp.layer]
    if hp.kind == "resid_pre":
        def pre(mod, args, kwargs):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        handle = layer.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        target = layer if hp.kind == "resid_post" else _block(layer, hp.kind)
        handle = target.register_forward_hook(lambda mod, args, output: _replace_output(output, fn(_first(output))))
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class ActivationSpec:
    """What determines an activation array (the cache key, with the hookpoint)."""

    model: str
    variant: str
    corpus: str
    n_tokens: int  # rows wanted; the array has ceil(n_tokens / (seq_len - drop_first)) sequences' worth
    seq_len: int
    seed: int  # corpus shuffle seed
    split: str = "train"
    variant_seed: int = 0
    drop_first: int = 1  # leading positions dropped from each sequence (attention-sink outliers)
    model_dtype: str = "float32"  # dtype of the forward pass
    # control only: sequences per forward pass, on which its noise depends (one draw per call of the embedding);
    # 0 for every other variant, and then not part of the key (their keys are what they were before it existed)
    noise_batch: int = 0
    store_dtype: str = "float32"  # STORE_DTYPES: the arrays' dtype (the key's `dtype` field, as before it existed)

    def __post_init__(self):
        if self.store_dtype not in STORE_DTYPES:
            raise ActivationError(f"store_dtype={self.store_dtype!r}; valid: {list(STORE_DTYPES)}")

    def n_seqs(self) -> int:
        return math.ceil(self.n_tokens / (self.seq_len - self.drop_first))


def key_fields(spec: ActivationSpec) -> dict:
    """The cache-key fields of `spec` (`noise_batch` only where it is set: the control variant), with the content
    keys of a local or hub model and corpus (`models.content_id`, `corpus.content_id`) where they have one: an
    edited local folder or a moved hub branch is not the data the cached activations were made from."""
    fields = dataclasses.asdict(spec)
    del fields["store_dtype"]  # it is the per-hookpoint `dtype` field (`_fields`)
    if not fields["noise_batch"]:
        del fields["noise_batch"]
    for name, content in (("model_content", model_content(spec.model)),
                          ("corpus_content", corpus_content(parse_corpus(spec.corpus)))):
        if content is not None:
            fields[name] = content
    return fields


STORE_DTYPES = {"float32": np.float32, "float16": np.float16}  # what an activation array may be stored in
FP16_MAX = float(np.finfo(np.float16).max)


def _fields(spec: ActivationSpec, hookpoint: str) -> dict:
    """The cache key fields of one hookpoint's array."""
    return dict(key_fields(spec), hookpoint=hookpoint, dtype=spec.store_dtype)


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _fresh_array(path: Path, rows: int, d: int, dtype=np.float32) -> np.ndarray:
    """A new [rows, d] .npy memmap whose blocks are reserved on disk first (`posix_fallocate`), so a disk
    that fills up fails here with a message, not later with SIGBUS inside a write to the mapping."""
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, d))
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as err:
        path.unlink(missing_ok=True)  # the mapping goes with `arr`
        free = shutil.disk_usage(path.parent).free
        raise ActivationError(f"cannot reserve {human_bytes(size)} for {path} ({err.strerror}; "
                              f"{human_bytes(free)} free there): free space or set SAESANITY_CACHE elsewhere") from None
    finally:
        os.close(fd)
    return arr


def _resume_partial(w: Path, seqs: np.ndarray, rows: int, d: int, per_seq: int,
                    dtype=np.float32) -> tuple[np.ndarray, int] | None:
    """(the array, sequences done) of an interrupted collection's work folder `w`, or None to start it afresh:
    nothing there, or something unusable — an unreadable or out-of-range progress.json, an acts.npy of the wrong
    shape or truncated, token rows that are not these, or an all-zero row among those it says are written (a
    write lost before the crash). Each unusable case is said on stderr with the folder."""
    prog, acts = w / "progress.json", w / "acts.npy"
    if not (acts.exists() and prog.exists()):
        return None
    try:
        done = json.loads(prog.read_text())["seqs_done"]
        if not isinstance(done, int) or not 0 <= done <= seqs.shape[0]:
            raise ValueError(f"seqs_done={done!r} outside [0, {seqs.shape[0]}]")
        arr = np.lib.format.open_memmap(acts, mode="r+")
        if arr.shape != (rows, d) or arr.dtype != dtype:
            raise ValueError(f"acts.npy is {arr.shape} {arr.dtype}, not {(rows, d)} {np.dtype(dtype).name}")
        if not np.array_equal(np.load(w / "tokens.npy"), seqs):
            raise ValueError("its token rows are not this collection's")
        zero = int((~arr[:done * per_seq].any(axis=1)).sum())
        if zero:
            raise ValueError(f"{zero:,} of the {done * per_seq:,} rows it says are written are all zero")
    except (OSError, ValueError, KeyError, TypeError, EOFError) as err:
        print(f"saesanity: restarting the interrupted collection in {w}: {err}", file=sys.stderr, flush=True)
        for f in (acts, prog, w / "tokens.npy"):
            f.unlink(missing_ok=True)
        return None
    return arr, done


def collect(spec: ActivationSpec, hookpoints: list[str], *, batch_size: int = 8, device: str = "cpu",
            lm: LoadedModel | None = None, progress: bool = True) -> dict[str, np.ndarray]:
    """Activations [n_rows, d_model] in `spec.store_dtype` (memory-mapped, read-only) at each hookpoint.

    Hookpoints already cached are read; the missing ones are computed together in one forward pass
    per batch. Collection resumes where an interrupted run stopped.
    """
    if not 0 <= spec.drop_first < spec.seq_len - 1:
        raise ActivationError(f"drop_first={spec.drop_first} must be below seq_len-1={spec.seq_len - 1}")
    if spec.variant == "control" and spec.noise_batch != batch_size:
        raise ActivationError(f"control activations depend on the batch size (their noise is one draw per forward "
                              f"pass): spec.noise_batch={spec.noise_batch} must equal batch_size={batch_size}")
    fields = [_fields(spec, h) for h in hookpoints]
    store = STORE_DTYPES[spec.store_dtype]
    if len(set(hookpoints)) != len(hookpoints):
        raise HookpointError(f"hookpoints {hookpoints} repeat a name")

    def compute(missing: list[int], works: list[Path]) -> list[dict]:
        nonlocal lm
        if lm is None:
            lm = load_model(spec.model, spec.variant, spec.variant_seed, device, spec.model_dtype)
        names = [hookpoints[i] for i in missing]
        for h in names:
            parse_hookpoint(h, lm.n_layers, lm.name)
        seqs = token_sequences(spec.corpus, lm.tokenizer, lm.tokenizer_id, spec.seq_len, split=spec.split,
                               seed=spec.seed, max_tokens=spec.n_seqs() * spec.seq_len)
        n_seqs, per_seq = spec.n_seqs(), spec.seq_len - spec.drop_first
        if seqs.shape[0] < n_seqs:
            raise ActivationError(
                f"corpus {spec.corpus!r} ({spec.split}) has {seqs.shape[0]:,} sequences of {spec.seq_len} tokens "
                f"({seqs.shape[0] * per_seq:,} usable tokens); n_tokens={spec.n_tokens:,} needs {n_seqs:,}")
        seqs = np.ascontiguousarray(seqs[:n_seqs])
        rows, d = n_seqs * per_seq, lm.d_model
        # what is still to be written: a resumed collection's arrays already hold their written pages
        need = rows * d * np.dtype(store).itemsize * len(works) - sum(allocated_bytes(w / "acts.npy") for w in works)
        free = shutil.disk_usage(works[0].parent).free
        if need > free:
            raise ActivationError(f"{len(works)} activation array(s) of {rows:,}×{d} {spec.store_dtype} need "
                                  f"{human_bytes(need)} "
                                  f"more; only {human_bytes(free)} free under {works[0].parent}: free space or set "
                                  "SAESANITY_CACHE elsewhere")
        arrays, done = [], n_seqs
        for w in works:
            resumed = _resume_partial(w, seqs, rows, d, per_seq, store)
            if resumed is not None:
                arrays.append(resumed[0])
                done = min(done, resumed[1])
            else:
                arrays.append(_fresh_array(w / "acts.npy", rows, d, store))
                np.save(w / "tokens.npy", seqs)
                done = 0
        emb = lm.model.get_input_embeddings()
        t0, start = time.perf_counter(), done
        bar = tqdm(total=rows, initial=done * per_seq, unit="tok", unit_scale=True, disable=not progress,
                   desc=f"activations {','.join(names)}")
        last_save = time.perf_counter()
        for b in range(done, n_seqs, batch_size):
            if isinstance(emb, GaussianEmbedding):
                emb.call_index = b // batch_size  # same noise for the same batch, resumed or not
            ids = torch.from_numpy(np.array(seqs[b:b + batch_size], dtype=np.int64)).to(device)  # a copy: the rows are read-only
            acts = run_to_hookpoints(lm, ids, names)
            for name, arr in zip(names, arrays):
                a = acts[name][:, spec.drop_first:, :].reshape(-1, d).float().cpu().numpy()
                if not np.isfinite(a).all():
                    raise ActivationError(f"activations at {name} contain NaN/inf (sequences {b}–{b + len(ids) - 1} "
                                          f"of {spec.model} {spec.variant})")
                peak = float(np.abs(a).max()) if store is np.float16 else 0.0
                if peak > FP16_MAX:
                    raise ActivationError(f"an activation at {name} is {peak:.4g}, beyond float16's "
                                          f"{FP16_MAX:g} (sequences {b}–{b + len(ids) - 1}): store it as float32")
                arr[b * per_seq:b * per_seq + a.shape[0]] = a
            bar.update(len(ids) * per_seq)
            if time.perf_counter() - last_save >= _SAVE_EVERY_S:
                for w, arr in zip(works, arrays):
                    arr.flush()
                    _atomic_json(w / "progress.json", {"seqs_done": b + len(ids)})
                last_save = time.perf_counter()
        bar.close()
        elapsed = time.perf_counter() - t0
        for w, arr in zip(works, arrays):
            arr.flush()
            (w / "progress.json").unlink(missing_ok=True)
        del arrays
        tps = (n_seqs - start) * spec.seq_len / max(elapsed, 1e-9)
        return [{"rows": rows, "d_model": d, "tokens_per_s": tps, "seconds": elapsed} for _ in works]

    paths = cached_many("activations", fields, compute, version=_VERSION, resumable=True)
    return {h: np.load(p / "acts.npy", mmap_mode="r") for h, p in zip(hookpoints, paths)}


def artifact_dirs(spec: ActivationSpec, hookpoints: list[str]) -> list[Path]:
    """Where `collect` keeps each hookpoint's array (to key downstream artifacts on)."""
    from .cache import artifact_path

    return [artifact_path("activations", _fields(spec, h), _VERSION) for h in hookpoints]
