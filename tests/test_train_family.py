"""train_family: N SAEs in one pass == N separate runs (bitwise); resume after a kill; data parallel
under torchrun (2 gloo ranks == 1 rank; a rank SIGKILLed after a checkpoint, then resumed)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import planted
from saesanity.sae import TrainConfig, train_sae
from saesanity.sae.train import MemmapSource, batch_order, train_families, train_family

HERE = Path(__file__).parent


def _equal(a, b):
    return all(torch.equal(t, b.state_dict()[n]) for n, t in a.state_dict().items())


def _family():
    base = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=4096, dead_tokens=512, log_every=3, lr=3e-3)
    return [base, dataclasses.replace(base, seed=1), dataclasses.replace(base, d_sae=96, k=6, seed=2),
            dataclasses.replace(base, n_tokens=2048, seed=3),  # a shorter member stops at its own step count
            dataclasses.replace(base, architecture="batchtopk"), dataclasses.replace(base, architecture="relu"),
            dataclasses.replace(base, architecture="gated"), dataclasses.replace(base, architecture="jumprelu")]


def test_family_in_one_pass_equals_separate_runs():
    acts, _ = planted(n=4096)
    cfgs = _family()
    reads = []
    source = MemmapSource(acts, batch_order(acts.shape[0], cfgs[0]))
    together = train_family(source, cfgs, progress=False, on_batch=lambda step, x: reads.append(step))
    assert reads == list(range(16))  # one read of each batch for all eight SAEs
    for cfg, (sae, log) in zip(cfgs, together):
        alone, alone_log = train_sae(acts, cfg, progress=False)
        assert _equal(sae, alone), cfg
        assert log == alone_log


def test_families_on_their_own_sources_equal_separate_runs():
    """`train_families`: families on different sources (here of different widths and lengths) train together,
    each member bitwise as its family alone; a source is read once a step while its family still trains."""
    acts_a, _ = planted(n=4096, d=16)
    acts_b, _ = planted(n=2048, d=24, seed=1)
    fam_a = _family()[:2] + _family()[5:6]
    fam_b = [dataclasses.replace(c, n_tokens=2048) for c in (_family()[0], _family()[7])]
    src_a = MemmapSource(acts_a, batch_order(acts_a.shape[0], fam_a[0]))
    src_b = MemmapSource(acts_b, batch_order(acts_b.shape[0], fam_b[0]))
    reads = []
    together = train_families([(src_a, fam_a), (src_b, fam_b)], progress=False,
                              on_batch=lambda step, xs: reads.append([x is not None for x in xs]))
    assert reads == [[True, True]] * 8 + [[True, False]] * 8  # b's family ends after 8 steps of 256
    for src, fam, res in ((src_a, fam_a, together[0]), (src_b, fam_b, together[1])):
        for (a, la), (b, lb) in zip(res, train_family(src, fam, progress=False)):
            assert a.d_in == src.d_in and _equal(a, b) and la == lb
    with pytest.raises(ValueError, match=r"needs at least one \(source, configs\) family"):
        train_families([], progress=False)
    with pytest.raises(ValueError, match="snapshots has 1 entries for 2 families"):
        train_families([(src_a, fam_a), (src_b, fam_b)], snapshots=[[{}] * 3], progress=False)
    from saesanity.sae.train import _check_families

    with pytest.raises(ValueError, match=r"every member of every family trains for the same number of steps; "
                                         r"these train for \[8, 16\]"):
        _check_families([(src_a, fam_a[:1]), (src_b, fam_b[:1])], world=2)  # what torchrun would be refused


def test_family_rejects_mixed_batches():
    acts, _ = planted(n=4096)
    cfgs = _family()[:2]
    source = MemmapSource(acts, batch_order(acts.shape[0], cfgs[0]))
    with pytest.raises(ValueError, match=r"batch sizes \[512\] differ from the source's 256"):
        train_family(source, [cfgs[0], dataclasses.replace(cfgs[1], batch_size=512)], progress=False)
    with pytest.raises(ValueError, match=r"n_tokens=8,192 needs 32 steps; the source has 16"):
        train_family(source, [dataclasses.replace(cfgs[1], n_tokens=8192)], progress=False)


def test_family_resumes_after_a_kill(tmp_path):
    acts, _ = planted(n=4096)
    cfgs = _family()[:3] + _family()[5:]
    source = MemmapSource(acts, batch_order(acts.shape[0], cfgs[0]))
    full = train_family(source, cfgs, progress=False)
    ckpt = tmp_path / "ck.pt"

    def die(step, x):
        if step == 9:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train_family(source, cfgs, progress=False, checkpoint=ckpt, on_batch=die, checkpoint_every_s=0.0)
    assert torch.load(ckpt, weights_only=True)["step"] == 9
    resumed = train_family(source, cfgs, progress=False, checkpoint=ckpt)
    for (a, la), (b, lb) in zip(full, resumed):
        assert _equal(a, b) and la == lb


def test_unreadable_checkpoint_restarts(tmp_path):
    acts, _ = planted(n=2048)
    cfg = TrainConfig(d_sae=32, k=4, batch_size=256, n_tokens=2048)
    ckpt = tmp_path / "ck.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="cannot be resumed from .* restarts from step 0"):
        sae, _ = train_sae(acts, cfg, progress=False, checkpoint=ckpt)
    assert _equal(sae, train_sae(acts, cfg, progress=False)[0])
    # a checkpoint that would run code when unpickled is refused, not executed (weights_only=True)
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    ckpt.write_bytes(pickle.dumps({"members": [Payload()], "step": 1}))
    with pytest.warns(UserWarning, match="cannot be resumed from"):
        train_sae(acts, cfg, progress=False, checkpoint=ckpt)
    assert not (tmp_path / "pwned").exists()


def _torchrun(tmp_path, out, ckpt, archs, die_at=None):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "dist_train.py"), str(out), str(ckpt), archs] + ([str(die_at)] if die_at is not None else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent / "lib"),
                                                                             os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


ARCHS = "topk,topk,relu,gated,jumprelu"


def test_two_ranks_equal_one_rank(tmp_path):
    """The same global batch split over 2 gloo ranks trains the same SAEs as 1 rank (to float reassociation)."""
    r = _torchrun(tmp_path, tmp_path / "two.pt", "-", ARCHS)
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert two["world"] == 2
    sys.path.insert(0, str(HERE))
    from dist_train import family

    acts, _ = planted(n=4096, d=16)
    cfgs = family(ARCHS.split(","))
    one = train_family(MemmapSource(acts, batch_order(acts.shape[0], cfgs[0])), cfgs, progress=False)
    for cfg, state, log, (sae, one_log) in zip(cfgs, two["states"], two["logs"], one):
        for name, t in sae.state_dict().items():
            torch.testing.assert_close(state[name], t, rtol=1e-5, atol=1e-6, msg=f"{cfg.architecture} {name}")
        assert [r["step"] for r in log] == [r["step"] for r in one_log]
        for a, b in zip(log, one_log):  # logged FVU and dead fraction are the global batch's
            assert a["fvu"] == pytest.approx(b["fvu"], rel=1e-4) and a["dead_frac"] == b["dead_frac"]
    first_dead = next(r for r in one[0][1] if r["dead_frac"] > 0)  # AuxK and dead-latent counting were exercised
    assert first_dead["step"] < 15


def test_frozen_baselines_train_the_same_on_two_ranks_and_keep_their_frozen_part(tmp_path):
    """Korznikov et al.'s baselines under torchrun: a frozen decoder / soft-frozen decoder / frozen encoder trained
    over 2 gloo ranks equals the 1-rank run, and the frozen part is still its initialisation (the all-reduced
    gradient of a frozen weight is dropped on every rank alike)."""
    archs = "topk+decoder,topk+soft_decoder,topk+encoder"
    r = _torchrun(tmp_path, tmp_path / "two.pt", "-", archs)
    assert r.returncode == 0, r.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    sys.path.insert(0, str(HERE))
    from dist_train import family

    from saesanity.sae.train import make_sae

    acts, _ = planted(n=4096, d=16)
    cfgs = family(archs.split(","))
    one = train_family(MemmapSource(acts, batch_order(acts.shape[0], cfgs[0])), cfgs, progress=False)
    for cfg, state, (sae, _) in zip(cfgs, two["states"], one):
        for name, t in sae.state_dict().items():
            torch.testing.assert_close(state[name], t, rtol=1e-5, atol=1e-6, msg=f"{cfg.freeze} {name}")
        init = make_sae(cfg, 16)
        if cfg.freeze == "decoder":
            torch.testing.assert_close(state["W_dec"], init.W_dec, rtol=0, atol=1e-6)
        elif cfg.freeze == "encoder":
            torch.testing.assert_close(state["W_enc"], init.W_enc, rtol=0, atol=0)
        else:
            assert torch.linalg.vecdot(state["W_dec"], init.W_dec).min() >= cfg.freeze_min_cos - 1e-5
        assert not torch.allclose(state["W_enc" if cfg.freeze != "encoder" else "W_dec"],
                                  (init.W_enc if cfg.freeze != "encoder" else init.W_dec), atol=1e-4)


def test_rank_killed_after_checkpoint_resumes(tmp_path):
    r = _torchrun(tmp_path, tmp_path / "full.pt", tmp_path / "full-ck.pt", "topk,relu")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = tmp_path / "ck.pt"
    r = _torchrun(tmp_path, tmp_path / "resumed.pt", ckpt, "topk,relu", die_at=9)
    assert r.returncode != 0 and ckpt.exists() and not (tmp_path / "resumed.pt").exists()
    assert 1 <= torch.load(ckpt, weights_only=True)["step"] <= 10
    r = _torchrun(tmp_path, tmp_path / "resumed.pt", ckpt, "topk,relu")
    assert r.returncode == 0, r.stderr[-3000:]
    full, resumed = (torch.load(tmp_path / f, weights_only=True) for f in ("full.pt", "resumed.pt"))
    for a, b in zip(full["states"], resumed["states"]):
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert full["logs"] == resumed["logs"]


def test_several_epochs_follow_one_another_each_its_own_permutation():
    rows, cfg = 8, TrainConfig(d_sae=8, k=2, batch_size=4, n_tokens=20, data_seed=3)  # 5 steps: 2.5 passes
    order = batch_order(rows, cfg)
    passes = [order[2 * e:2 * e + 2].reshape(-1) for e in range(2)]  # two batches per pass
    assert all(sorted(p) == list(range(rows)) for p in passes)  # each full pass covers every row once
    one = batch_order(rows, dataclasses.replace(cfg, n_tokens=8))
    assert np.array_equal(order[:2], one)  # epoch 0 is the order a one-epoch run has (a prefix)
    first, second = (np.random.default_rng(s).permutation(rows) for s in (3, [3, 1]))
    assert [sorted(b) for b in order[:2]] == [sorted(first[:4]), sorted(first[4:])]
    assert [sorted(b) for b in order[2:4]] == [sorted(second[:4]), sorted(second[4:])]
    assert not np.array_equal(order[:2], order[2:4])
    with pytest.raises(ValueError, match="fewer than one batch"):
        batch_order(3, cfg)


def test_a_second_epoch_trains_on_every_row_again_and_lowers_the_training_fvu():
    acts, _ = planted(n=2048, d=16, n_feat=32)
    seen = []
    cfg = TrainConfig(d_sae=64, k=4, batch_size=256, n_tokens=2048, lr=3e-3, log_every=1)
    _, one = train_sae(acts, cfg, progress=False)
    _, two = train_sae(acts, dataclasses.replace(cfg, n_tokens=4096), progress=False,
                       on_batch=lambda step, x: seen.append(x.shape[0]))
    assert len(seen) == 16 and sum(seen) == 2 * len(acts)
    assert two[:len(one)] == one  # the first epoch is the one-epoch run, step for step
    assert two[-1]["fvu"] < one[-1]["fvu"]
