#!/usr/bin/env bash
# GPU check (≤ 8 min on one GPU): CUDA smoke of every pipeline step, SAE tokens/s at 32K latents with and
# without TF32, peak memory at 131K latents, Pythia-160M-shaped activation tokens/s, 2-process NCCL if two
# GPUs. Run from the repository root on a machine with a CUDA torch; results go to stdout and bench/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PY" bench/gpu_check.py "$@" | tee bench/gpu_check.md
