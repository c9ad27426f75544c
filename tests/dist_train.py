"""Run by tests/test_train_family.py under `torchrun --nproc_per_node 2` (gloo): trains a family on planted
activations with `train_family` and rank 0 saves every member's state to OUT.

    dist_train.py OUT CHECKPOINT ARCH[,ARCH…] [DIE_AT_STEP]

An ARCH of the form topk+decoder trains that architecture with that part frozen (TrainConfig.freeze).

With DIE_AT_STEP, rank 1 SIGKILLs itself at that step (after rank 0 has checkpointed every step).
With $DIST_STREAM_MODEL (a model folder), batches come from that model's forward pass (`stream_source`)
instead of planted activations; with $DIST_STREAM_HOOKPOINTS too (comma-separated), one source serves all of
those hookpoints and the family trains at each of them in one pass (`train_families` over its views; the
states saved are every hookpoint's members in turn).
"""

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import planted  # noqa: E402

from saesanity import distributed  # noqa: E402
from saesanity.sae.train import MemmapSource, TrainConfig, batch_order, train_families, train_family  # noqa: E402


def family(archs):
    """One config per entry of `archs`: an architecture, or <architecture>+<frozen part> (TrainConfig.freeze)."""
    return [TrainConfig(d_sae=128, k=2, batch_size=256, n_tokens=4096, seed=i, architecture=a.split("+")[0],
                        freeze=(a.split("+") + ["none"])[1], dead_tokens=256, log_every=2, lr=3e-3,
                        l1_coefficient=0.3, l0_coefficient=0.01) for i, a in enumerate(archs)]


def stream_source(model_dir, n_steps, hookpoint="mlp_out.1"):
    """A ModelSource over a local model's `hookpoint` (or list of them) on the fortunes text, 4 batches of 256
    rows a chunk."""
    from saesanity.corpus import token_sequences
    from saesanity.models import load_model
    from saesanity.stream import ModelSource

    lm = load_model(model_dir)
    tokens = token_sequences("debian:fortunes", lm.tokenizer, lm.tokenizer_id, 33, seed=0)[:200]
    return ModelSource(lm, tokens, hookpoint, batch_size=256, batches_per_chunk=4, n_steps=n_steps,
                       model_batch_size=4)


def main(out, ckpt, archs, die_at=None):
    rank, world, device = distributed.init(os.environ.get("DIST_DEVICE", "cpu"))  # bench/gpu_check.py: cuda
    torch.set_num_threads(1)
    cfgs = family(archs.split(","))
    n_steps = cfgs[0].n_tokens // cfgs[0].batch_size
    hookpoints = [h for h in os.environ.get("DIST_STREAM_HOOKPOINTS", "").split(",") if h]
    if os.environ.get("DIST_STREAM_MODEL"):
        source = stream_source(os.environ["DIST_STREAM_MODEL"], n_steps, hookpoints or "mlp_out.1")
    else:
        acts, _ = planted(n=4096, d=16)
        source = MemmapSource(acts, batch_order(acts.shape[0], cfgs[0]))

    def on_batch(step, x):
        if die_at is not None and rank == 1 and step == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    kw = dict(checkpoint=Path(ckpt) if ckpt != "-" else None, progress=False, on_batch=on_batch,
              checkpoint_every_s=0.0, device=device)
    if hookpoints:
        res = [m for fam in train_families([(source.view(h), cfgs) for h in hookpoints], **kw) for m in fam]
    else:
        res = train_family(source, cfgs, **kw)
    if rank == 0:
        torch.save({"world": world, "states": [s.state_dict() for s, _ in res], "logs": [lg for _, lg in res]}, out)
    distributed.exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
