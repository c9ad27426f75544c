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
