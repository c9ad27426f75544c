"""The sparsify trainer: our hookpoints -> sparsify's modules; 2 gloo ranks through torchrun (the CLI) vs 1 rank;
the output read back by our loaders equals sparsify's own SparseCoder; the papers' recipes; one-line refusals."""

import dataclasses
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from saesanity.activations import HookpointError, run_to_hookpoints
from saesanity.corpus import token_sequences
from saesanity.models import load_model
from saesanity.sae import load_saes
from saesanity.sae import sparsify_trainer as st

HERE = Path(__file__).parent
D, F, K, T, B = 32, 128, 4, 32, 8  # tiny model width, latents, k, ctx_len, global batch (sequences)
N_TOKENS = 16 * B * T  # 16 steps
SMALL = dict(num_latents=F, k=K, ctx_len=T, batch_size=B, lr_warmup_steps=2, lr=1e-3)


def _corpus(tmp_path) -> str:
    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran far away into deep green woods and rivers".split()
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(5, 40)))}) + "\n"
                            for _ in range(400)))
    return f"hf:{path}"


def _rows(lm, corpus, n_tokens=N_TOKENS):
    return token_sequences(corpus, lm.tokenizer, lm.tokenizer_id, T, max_tokens=n_tokens, progress=False)


def _torchrun(tmp_path, args: list[str], nproc: int = 2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "saesanity.sae.sparsify_trainer", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE.parent / "lib"),
                                                                             os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def _cli_args(model_dir, corpus, out, **recipe) -> list[str]:
    args = ["--model", str(model_dir), "--corpus", corpus, "--n-tokens", str(N_TOKENS),
            "--hookpoints", "mlp_out.1", "resid_post.2", "--seeds", "0", "1", "--out", str(out)]
    for name, value in {**SMALL, **recipe}.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _initial(seed: int):
    """The SAE sparsify's Trainer builds for `seed` before training (trainer.py:95-101)."""
    from sparsify import SaeConfig, SparseCoder

    torch.manual_seed(seed)
    return SparseCoder(D, SaeConfig(k=K, num_latents=F), "cpu", dtype=torch.float32)


# ---------------------------------------------------------------- hookpoints

def _tiny_gpt2(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from conftest import _save_char_tokenizer

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=3, n_head=4, n_positions=64)).save_pretrained(tmp_path)
    _save_char_tokenizer(tmp_path)
    return tmp_path


@pytest.mark.parametrize("arch", ["neox", "llama", "gpt2"])
def test_hookpoints_name_the_modules_our_collector_hooks(arch, tiny_neox_dir, tiny_llama_dir, tmp_path):
    path = {"neox": tiny_neox_dir, "llama": tiny_llama_dir, "gpt2": None}[arch] or _tiny_gpt2(tmp_path)
    lm = load_model(str(path))
    layers, attn = {"neox": ("layers", "attention"), "llama": ("layers", "self_attn"), "gpt2": ("h", "attn")}[arch]
    expect = {"mlp_out.1": f"{layers}.1.mlp", "resid_post.1": f"{layers}.1", "attn_out.2": f"{layers}.2.{attn}"}
    assert {h: st.sparsify_hookpoint(lm, h) for h in expect} == expect
    ids = torch.randint(1, 96, (2, 16))
    ours = run_to_hookpoints(lm, ids, list(expect))
    base, got = lm.model.base_model, {}
    handles = [base.get_submodule(name).register_forward_hook(
        lambda m, a, o, h=h: got.__setitem__(h, o[0] if isinstance(o, tuple) else o)) for h, name in expect.items()]
    with torch.no_grad():
        base(input_ids=ids)
    for h in handles:
        h.remove()
    for h in expect:  # sparsify's forward hook on that module sees exactly the activation we collect
        torch.testing.assert_close(got[h], ours[h], rtol=0, atol=0)


# ---------------------------------------------------------------- torchrun

def test_torchrun_two_gloo_ranks_two_seeds_read_back_and_match_one_rank(tiny_neox_dir, iso_cache, tmp_path):
    from sparsify import SparseCoder

    corpus = _corpus(tmp_path)
    r = _torchrun(tmp_path, _cli_args(tiny_neox_dir, corpus, tmp_path / "two"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("Training on modules") == 1  # ranks other than 0 are quiet, as in sparsify's __main__
    man = json.loads((tmp_path / "two" / st.MANIFEST).read_text())
    assert man["world_size"] == 2 and man["hookpoints"] == {"mlp_out.1": "layers.1.mlp", "resid_post.2": "layers.2"}
    assert man["train_config"]["batch_size"] == B // 2 and man["rows_trained"] == N_TOKENS // T and man["steps"] == 16
    assert man["optimizer_class"] == "torch.optim.adam.Adam"

    two = load_saes(tmp_path / "two")
    names = ["layers.1.mlp/seed0", "layers.1.mlp/seed1", "layers.2/seed0", "layers.2/seed1"]
    assert list(two) == names
    by_hook = st.load_run(tmp_path / "two")
    assert sorted(by_hook) == [("mlp_out.1", 0), ("mlp_out.1", 1), ("resid_post.2", 0), ("resid_post.2", 1)]
    assert by_hook[("resid_post.2", 1)].hookpoint == "resid_post.2"

    x = torch.randn(64, D) * 3 + 1
    for name, ours in two.items():  # our loader == sparsify's own SparseCoder on a batch
        assert (ours.d_in, ours.d_sae, ours.k) == (D, F, K)
        theirs = SparseCoder.load_from_disk(tmp_path / "two" / name)
        with torch.no_grad():
            acts, idx, _ = theirs.encode(x)
            z = torch.zeros(64, F).scatter_(1, idx, acts)
            torch.testing.assert_close(ours.encode(x), z, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.decode(z), theirs.decode(acts, idx), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours(x), theirs(x).sae_out, rtol=1e-5, atol=1e-5)

    lm = load_model(str(tiny_neox_dir))  # the same config on one rank, in this process
    folders = st.train_sparsify(lm, _rows(lm, corpus), ["mlp_out.1", "resid_post.2"], [0, 1], tmp_path / "one", **SMALL)
    assert folders["resid_post.2"] == {0: tmp_path / "one/layers.2/seed0", 1: tmp_path / "one/layers.2/seed1"}
    one = load_saes(tmp_path / "one")
    assert list(one) == names
    for name in names:
        init = _initial(int(name[-1]))
        start = {"W_enc": init.encoder.weight.detach().t(), "W_dec": init.W_dec.detach()}
        for p in ("W_enc", "W_dec"):
            a, b = two[name].state_dict()[p], one[name].state_dict()[p]
            moved = ((b - start[p]).norm() / start[p].norm()).item()
            apart = ((a - b).norm() / b.norm()).item()
            # not bitwise: each rank's FVU is normalised by its own slice's variance (trainer.py:452) and DDP
            # averages the gradients; measured 0.4e-3 to 3.4e-3 apart after moving 2.5e-2 to 4.5e-2 from init
            assert moved > 0.01 and apart < 0.2 * moved, (name, p, apart, moved)
    assert not torch.equal(one["layers.2/seed0"].W_dec, one["layers.2/seed1"].W_dec)


def test_two_ranks_read_the_same_global_batches_as_one(tiny_neox_dir, iso_cache, tmp_path):
    """At a negligible learning rate the only trained state is b_dec = the first global batch's mean (trainer.py:420):
    2 ranks (mean of their slices' means) give 1 rank's value, so the ranks read exactly its batch rows, and the
    initialisation of every seed is the same on any world size."""
    corpus = _corpus(tmp_path)
    r = _torchrun(tmp_path, _cli_args(tiny_neox_dir, corpus, tmp_path / "two", lr=1e-30, clip_grad_norm=1.0))
    assert r.returncode == 0, r.stderr[-3000:]
    lm = load_model(str(tiny_neox_dir))
    st.train_sparsify(lm, _rows(lm, corpus), ["mlp_out.1", "resid_post.2"], [0, 1], tmp_path / "one",
                      **{**SMALL, "lr": 1e-30})
    two, one = load_saes(tmp_path / "two"), load_saes(tmp_path / "one")
    for name in one:
        for p, t in one[name].state_dict().items():
            torch.testing.assert_close(two[name].state_dict()[p], t, rtol=1e-5, atol=1e-6, msg=f"{name} {p}")
        init = _initial(int(name[-1]))
        torch.testing.assert_close(one[name].W_enc, init.encoder.weight.detach().t(), rtol=1e-6, atol=1e-7)
    rows = _rows(lm, corpus)[:B]
    acts = run_to_hookpoints(lm, torch.from_numpy(rows.astype(np.int64)), ["mlp_out.1"])["mlp_out.1"]
    torch.testing.assert_close(one["layers.1.mlp/seed0"].b_dec, acts.reshape(-1, D).mean(0), rtol=1e-5, atol=1e-6)


def test_rank_rows_split_each_global_batch():
    assert st.rank_rows(10, 4, 0, 2).tolist() == [0, 1, 4, 5]
    assert st.rank_rows(10, 4, 1, 2).tolist() == [2, 3, 6, 7]
    assert st.rank_rows(10, 4, 0, 1).tolist() == list(range(8))
    with pytest.raises(st.SparsifyError, match="not divisible by the world size 3"):
        st.rank_rows(10, 4, 0, 3)


# ---------------------------------------------------------------- runtime adaptations

def test_ddp_patch_is_needed_on_the_cpu_and_restored(tmp_path):
    import torch.distributed as dist
    import sparsify.trainer as sparsify_trainer
    from torch import nn

    original = sparsify_trainer.DDP
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="device_ids"):  # what trainer.py:501 does with a CPU SAE
            original(nn.Linear(2, 2), device_ids=[dist.get_rank()])
        with st._patched_ddp():
            assert sparsify_trainer.DDP is st._ddp
            wrapped = sparsify_trainer.DDP(nn.Linear(2, 2), device_ids=[0])
            assert wrapped.device_ids is None
    finally:
        dist.destroy_process_group()
    assert sparsify_trainer.DDP is original


def test_clipping_runs_before_the_parallel_gradient_removal():
    from sparsify import SaeConfig, SparseCoder

    sae = SparseCoder(D, SaeConfig(k=K, num_latents=F))
    for p in sae.parameters():
        p.grad = torch.randn_like(p) * 10
    st._add_clipping({"s": sae}, 0.5)
    sae.remove_gradient_parallel_to_decoder_directions()
    assert torch.nn.utils.get_total_norm([p.grad for p in sae.parameters()]) <= 0.5 + 1e-6
    parallel = (sae.W_dec.grad * sae.W_dec.data).sum(1)
    torch.testing.assert_close(parallel, torch.zeros(F), rtol=0, atol=1e-6)


def test_control_noise_differs_between_ranks(tiny_neox_dir):
    lm = load_model(str(tiny_neox_dir), "control", seed=3)
    emb, ids = lm.model.get_input_embeddings(), torch.zeros(2, 5, dtype=torch.long)
    drawn = {}
    for rank in (0, 1):
        emb.call_index = 0
        with st._rank_noise(lm, rank, 2):
            drawn[rank] = [emb(ids) for _ in range(3)]
    for n in range(3):
        for rank in (0, 1):
            emb.call_index = n * 2 + rank  # the index of rank r's n-th call
            torch.testing.assert_close(drawn[rank][n], emb(ids), rtol=0, atol=0)
        assert not torch.equal(drawn[0][n], drawn[1][n])
    emb.call_index = 0
    with st._rank_noise(lm, 0, 1):  # one rank: the embedding's own counter, untouched
        first, second = emb(ids), emb(ids)
    assert emb.call_index == 2 and not torch.equal(first, second)


# ---------------------------------------------------------------- the recipes

PAULO = dict(k=32, num_latents=32768, expansion_factor=36, ctx_len=2049, batch_size=32, grad_acc_steps=1,
             micro_acc_steps=1, optimizer="adam", lr=None, lr_warmup_steps=1000, auxk_alpha=0.0,
             dead_feature_threshold=10_000_000, normalize_decoder=True, clip_grad_norm=1.0, exclude_tokens=(),
             save_every=1000)
# Heap et al.'s saved run config (hub wlog/random_sae_pythia_70m_deduped, cfg.json), the fields a recipe sets
HEAP_SAVED = {"sae": {"expansion_factor": 64, "normalize_decoder": True, "num_latents": 0, "k": 32,
                      "multi_topk": False},
              "batch_size": 4, "grad_acc_steps": 8, "micro_acc_steps": 2, "lr": None, "lr_warmup_steps": 1000,
              "auxk_alpha": 0.0, "dead_feature_threshold": 10000000, "save_every": 1000}


def test_recipes_are_the_documented_ones(tiny_neox_dir, tmp_path):
    paulo = {k: v for k, v in dataclasses.asdict(st.PAULO_BELROSE_2025).items() if k not in ("name", "source")}
    assert paulo == PAULO
    assert st.HEAP_2025.ctx_len == 2048 and st.HEAP_2025.clip_grad_norm == 1.0 and st.HEAP_2025.optimizer == "adam"
    assert st.RECIPES["sparsify_1.3.3"].optimizer == "signum"

    lm = load_model(str(tiny_neox_dir))
    cfg = st.build_config(lm, ["mlp_out.1"], [0, 1], tmp_path / "run").to_dict()  # the default recipe
    expect = {"batch_size": 32, "grad_acc_steps": 1, "micro_acc_steps": 1, "loss_fn": "fvu", "optimizer": "adam",
              "lr": None, "lr_warmup_steps": 1000, "k_decay_steps": 0, "auxk_alpha": 0.0,
              "dead_feature_threshold": 10_000_000, "exclude_tokens": [], "hookpoints": ["layers.1.mlp"],
              "init_seeds": [0, 1], "distribute_modules": False, "log_to_wandb": False, "save_every": 1000,
              "run_name": "run", "save_dir": str(tmp_path)}
    assert {k: cfg[k] for k in expect} == expect
    assert {k: cfg["sae"][k] for k in ("activation", "k", "num_latents", "normalize_decoder", "transcode",
                                       "skip_connection", "multi_topk")} == \
        {"activation": "topk", "k": 32, "num_latents": 32768, "normalize_decoder": True, "transcode": False,
         "skip_connection": False, "multi_topk": False}

    heap = st.build_config(lm, ["resid_post.0", "resid_post.1", "resid_post.2"], [0], tmp_path / "h",
                           recipe="heap_2025").to_dict()
    assert {k: heap[k] for k in HEAP_SAVED if k != "sae"} == {k: v for k, v in HEAP_SAVED.items() if k != "sae"}
    assert {k: heap["sae"][k] for k in HEAP_SAVED["sae"]} == HEAP_SAVED["sae"]
    assert heap["hookpoints"] == ["layers.0", "layers.1", "layers.2"]  # theirs: gpt_neox.layers.N (older sparsify)

    two = st.build_config(lm, ["mlp_out.1"], [0], tmp_path / "run", world=2)  # sparsify's batch_size is per rank
    assert two.batch_size == 16
    tweaked = st.build_config(lm, ["mlp_out.1"], [0], tmp_path / "run", recipe="heap_2025", k=8, lr=3e-4)
    assert (tweaked.sae.k, tweaked.lr, tweaked.grad_acc_steps) == (8, 3e-4, 8)


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(hookpoints=["mlp_out.7"]), HookpointError, r"hookpoint 'mlp_out.7' does not exist; .* has layers 0–2"),
    (dict(hookpoints=["mlp_in.1"]), HookpointError, r"hookpoint 'mlp_in.1' is not valid"),
    (dict(hookpoints=["resid_pre.1"]), HookpointError, r"module outputs only .* resid_pre.L is resid_post.\(L-1\)"),
    (dict(architecture="relu"), st.SparsifyError, r"TopK SAEs only; relu SAEs are trained by saesanity.sae.train"),
    (dict(architecture="jumprelu"), st.SparsifyError, r"TopK SAEs only"),
    (dict(k=128), st.SparsifyError, r"k=128 must satisfy 0 < k < num_latents=128"),
    (dict(k=32, num_latents=0, expansion_factor=1), st.SparsifyError, r"k=32 must satisfy 0 < k < num_latents=32"),
    (dict(recipe="gao_2024"), st.SparsifyError, r"unknown sparsify recipe 'gao_2024'; valid: \['paulo_belrose_2025'"),
    (dict(learning_rate=1e-3), st.SparsifyError, r"unknown recipe field\(s\) \['learning_rate'\]"),
    (dict(seeds=[1, 1]), st.SparsifyError, r"seeds=\[1, 1\]: need at least one seed, without repeats"),
    (dict(ctx_len=2049), st.SparsifyError, r"rows have shape \(16, 32\); recipe paulo_belrose_2025 has ctx_len=2049"),
    (dict(batch_size=32), st.SparsifyError, r"16 token rows are less than one batch of 32 sequences"),
])
def test_bad_input_is_refused_in_one_line(kwargs, error, match, tiny_neox_dir, tmp_path):
    lm = load_model(str(tiny_neox_dir))
    args = {**SMALL, "batch_size": 4, **kwargs}
    hookpoints, seeds = args.pop("hookpoints", ["mlp_out.1"]), args.pop("seeds", [0])
    tokens = np.random.default_rng(0).integers(1, 96, (16, T))
    with pytest.raises(error, match=match) as info:
        st.train_sparsify(lm, tokens, hookpoints, seeds, tmp_path / "run", **args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_not_overwritten(tiny_neox_dir, tmp_path):
    lm = load_model(str(tiny_neox_dir))
    tokens = np.random.default_rng(0).integers(1, 96, (2 * B, T))
    before = torch.get_float32_matmul_precision()
    st.train_sparsify(lm, tokens, ["mlp_out.1"], [5], tmp_path / "run", **SMALL)
    assert torch.get_float32_matmul_precision() == before  # sparsify's fit() sets "high" process-wide
    assert list(load_saes(tmp_path / "run")) == ["layers.1.mlp"]  # one seed: sparsify adds no seedN folder
    assert st.load_run(tmp_path / "run")[("mlp_out.1", 5)].k == K
    with pytest.raises(st.SparsifyError, match="already holds a sparsify run; pass resume=True"):
        st.train_sparsify(lm, tokens, ["mlp_out.1"], [5], tmp_path / "run", **SMALL)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tiny_neox_dir, tmp_path, monkeypatch):
    """Bitwise, with AuxK on and two seeds: sparsify's own resume would retrain the checkpoint's last batch and
    restore no dead-latent clock of a multi-seed run (both corrected in `train_sparsify`)."""
    lm = load_model(str(tiny_neox_dir))
    tokens = np.random.default_rng(0).integers(1, 96, (16 * B, T))
    kw = {**SMALL, "save_every": 4, "auxk_alpha": 0.1, "dead_feature_threshold": 64}
    st.train_sparsify(lm, tokens, ["mlp_out.1"], [0, 1], tmp_path / "full", **kw)

    class Killed(Exception):
        pass

    read = st.TokenRows.__getitem__

    def dies_at_batch_9(self, i):
        if i >= 9 * B:
            raise Killed
        return read(self, i)

    monkeypatch.setattr(st.TokenRows, "__getitem__", dies_at_batch_9)
    with pytest.raises(Killed):
        st.train_sparsify(lm, tokens, ["mlp_out.1"], [0, 1], tmp_path / "cut", **kw)
    monkeypatch.setattr(st.TokenRows, "__getitem__", read)
    assert torch.load(tmp_path / "cut/state.pt", weights_only=True)["global_step"] == 6  # batches 0-6 trained
    st.train_sparsify(lm, tokens, ["mlp_out.1"], [0, 1], tmp_path / "cut", resume=True, **kw)
    full, cut = load_saes(tmp_path / "full"), load_saes(tmp_path / "cut")
    dead = torch.load(tmp_path / "full/rank_0_state.pt", weights_only=True)["num_tokens_since_fired"]
    assert any((c > 64).any() for c in dead.values())  # AuxK had dead latents to work on
    for name in full:
        for p, t in full[name].state_dict().items():
            assert torch.equal(cut[name].state_dict()[p], t), (name, p)
    assert st.train_sparsify(lm, tokens, ["mlp_out.1"], [0, 1], tmp_path / "cut", resume=True, **kw) == \
        {"mlp_out.1": {0: tmp_path / "cut/layers.1.mlp/seed0", 1: tmp_path / "cut/layers.1.mlp/seed1"}}  # finished


def test_cli_refuses_other_architectures_in_one_line(tiny_neox_dir, iso_cache, tmp_path, capsys):
    args = _cli_args(tiny_neox_dir, _corpus(tmp_path), tmp_path / "run") + ["--architecture", "gated"]
    assert st.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: architecture 'gated': the sparsify trainer trains TopK SAEs only")
