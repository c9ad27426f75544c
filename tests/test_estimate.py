"""saesanity.estimate: the counted cost of a paper profile, checked against a hand computation."""

import pytest

from saesanity import estimate


def test_fig1_paper_cost_by_hand():
    # Pythia-160M to layer 6 (7 layers of 12·768² weights), ctx 2049; five TopK SAEs of 32,768 latents (the pair
    # and the noise floor's seeds, one pass); 8B tokens
    n = 5
    fwd = 2 * 7 * 12 * 768**2 + 4 * 7 * 768 * 2049 / 2
    sae = 2 * 768 * 32768
    e = estimate.estimate("paulo_fig1_matched_cosines", "paper")
    assert e.gpu_hours == pytest.approx(8e9 * (fwd + n * sae) / estimate.RATE / 3600)
    held = 10_000_000 * 768 * 2  # float16 held-out activations (acts_dtype)
    weights = 2 * 768 * 32768 * 4
    assert e.disk_gb == pytest.approx((8e9 * 2 + held + n * weights + 3 * n * weights) / 1e9)  # streamed: no train acts
    assert e.gpu_mem_gb == pytest.approx((n * 16 * 2 * 768 * 32768 + 2 * 65536 * 32768 * 4 + 1048576 * 768 * 4) / 1e9)


def test_synthetic_sweep_cost_by_hand():
    # 5 k values x 5 seeds of 16,384-latent TopK SAEs on 100M generated rows of width 768; no language model
    e = estimate.estimate("consistency_synthetic", "paper")
    assert e.gpu_hours == pytest.approx(1e8 * 25 * 2 * 768 * 16384 / estimate.RATE / 3600)
    assert e.disk_gb == pytest.approx((25 * 2 * 768 * 16384 * 4 + 200_000 * 768 * 4) / 1e9)
    assert e.gpu_mem_gb == pytest.approx((25 * 16 * 2 * 768 * 16384 + 2 * 4096 * 16384 * 4) / 1e9)  # W_enc + W_dec
    assert "generated batch by batch: 0.6 GB" in e.note  # streamed: (4,096 + 2e5) rows x 768 x 4 bytes
    from saesanity import params

    cached = estimate._estimate_synthetic(params.load("consistency_synthetic", "paper", activations="cached"))
    assert "307.8 GB" in cached.note and "host memory" in cached.note  # (1e8 + 2e5) rows x 768 x 4 bytes


def test_cached_activations_cost_their_disk_and_the_table_covers_every_notebook():
    import dataclasses

    from saesanity import params

    P = params.load("paulo_fig1_matched_cosines", "paper")
    streamed = estimate.estimate("paulo_fig1_matched_cosines", "paper")
    orig = params.load
    try:
        params.load = lambda stem, profile, **kw: dataclasses.replace(P, activations="cached")
        cached = estimate.estimate("paulo_fig1_matched_cosines", "paper")
    finally:
        params.load = orig
    assert cached.disk_gb - streamed.disk_gb == pytest.approx(8e9 * 768 * 2 / 1e9)  # 12.3 TB of float16 activations
    params.load = lambda stem, profile, **kw: dataclasses.replace(P, activations="cached", acts_dtype="float32")
    try:
        cached32 = estimate.estimate("paulo_fig1_matched_cosines", "paper")
    finally:
        params.load = orig
    assert cached32.disk_gb - streamed.disk_gb == pytest.approx((8e9 * 768 * 4 + 10_000_000 * 768 * 2) / 1e9)
    rows = estimate.table().splitlines()[2:]
    assert len(rows) == len(params.REGISTRY) and all(r.startswith("| `") for r in rows)
    assert "release" in next(r for r in rows if "leask_stitching" in r)


def test_readme_gpu_table_is_the_generated_one():
    from saesanity.paths import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(estimate.GPU_START, 1)[1].split(estimate.GPU_END, 1)[0].strip()
    assert block == estimate.table(), "run `python -m saesanity.estimate --readme`"


def test_heap_frozen_baselines_are_counted_once_per_layer_of_the_trained_model():
    from saesanity import params

    P = params.load("heap_metrics_vs_layer", "paper")  # streamed: one pass per variant, the frozen ones their own
    ps = estimate.passes("heap_metrics_vs_layer", P)
    assert len(ps) == len(P.variants) + 1 and [len(p.saes) for p in ps][-1] == len(P.frozen) * len(P.layers)
    assert sum(len(p.saes) for p in ps) == (len(P.variants) + len(P.frozen)) * len(P.layers)
    D = params.load("heap_metrics_vs_layer", "default")  # cached: they join the trained model's per-layer passes
    ds = estimate.passes("heap_metrics_vs_layer", D)
    assert [len(p.saes) for p in ds] == [1 + len(D.frozen)] * len(D.layers) + [1] * len(D.layers) * (len(D.variants) - 1)
    assert len(estimate.passes("heap_token_entropy", D)) == len(D.variants) * len(D.layers)  # no frozen baselines
