"""bench/gpu_check.py stays runnable: its CPU mode (tiny sizes) runs every part but the NCCL one."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "--device", "cpu", "--quick"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for part in ("## smoke", "## train", "## memory", "## activations", "## ddp"):
        assert part in r.stdout
    assert "FAILED" not in r.stdout and "train 2 SAEs from the model forward (streamed)" in r.stdout
    assert "skipped: 0 GPU(s)" in r.stdout


def test_training_bench_runs_at_tiny_sizes(tmp_path):
    """bench/training.py (the TopK step against the GEMM rate, its breakdown, ours vs SAELens) stays runnable."""
    r = subprocess.run([sys.executable, str(ROOT / "bench/training.py"), "--d", "16", "--latents", "64", "--k", "4",
                        "--batch", "64", "--steps", "2", "--reps", "1", "--no-activations", "--breakdown", "--bf16"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for line in ("fp32 ", "bf16 autocast", "encoder product B·D·F", "top-k over [B, F]", "TopK + AuxK, fp32",
                 "ReLU + L1, bf16 autocast", "ours vs the fastest SAELens setting that runs"):
        assert line in r.stdout, line


def test_batchtopk_step_bench_runs_at_tiny_sizes(tmp_path):
    """bench/bench_batchtopk_step.py (the sparse BatchTopK / Matryoshka step against the dense one) stays runnable."""
    r = subprocess.run([sys.executable, str(ROOT / "bench/bench_batchtopk_step.py"), "--d", "16", "--latents", "64",
                        "--k", "4", "--batch", "64", "--steps", "1"], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for line in ("BatchTopK, dense (reference)", "BatchTopK, sparse", "Matryoshka, sparse", "TopK, sparse"):
        assert line in r.stdout, line
