"""The machine a number was made on, as every figure's JSON and benchmark records it: the CPU (its model name and
the matrix extensions whose kernels change bf16 results: AMX on Intel, AVX512-BF16 on AMD), the threads torch
uses, torch's version and any CUDA device. Results are bit-identical only between runs with the same record."""

from __future__ import annotations

import os
import platform

_ISA = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # the flags, in /proc/cpuinfo's names, we report


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine() or "unknown", flags


def info() -> dict:
    """{"cpu", "isa", "cores", "threads", "torch", "cuda"} of this process's machine."""
    import torch

    name, flags = _cpuinfo()
    return {"cpu": name, "isa": [f for f in _ISA if f in flags], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe(record: dict | None) -> str:
    """One line for a reader: 'AMD EPYC (avx512_bf16), 2 threads, torch 2.13.0+cpu'."""
    if not record:
        return "machine not recorded"
    isa = [f for f in record.get("isa", []) if f.startswith(("amx", "avx512_bf16"))] or record.get("isa", [])[:1]
    gpu = f", {record['cuda']}" if record.get("cuda") else ""
    flags = f" ({', '.join(isa)})" if isa else ""
    return f"{record.get('cpu', '?')}{flags}, {record.get('threads', '?')} threads, torch {record.get('torch', '?')}{gpu}"


def same(a: dict | None, b: dict | None) -> bool:
    """Whether two records name one kind of machine (CPU, extensions, threads, torch, GPU): the condition under
    which a regenerated figure is expected to be bit-identical."""
    keys = ("cpu", "isa", "threads", "torch", "cuda")
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys)
