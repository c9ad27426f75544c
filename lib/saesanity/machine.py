"""The machine a number was made on, as every figure's JSON and benchmark records it: the CPU (its model name and
the matrix extensions whose kernels change bf16 results: AMX on Intel, AVX512-BF16 on AMD), the threads torch
uses, torch's version and any CUDA device. Results are bit-identical only between runs with the same record."""

from __future__ import annotations

import os
import platform

_ISA = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")  # the flags, in /proc/cpuinfo's names, we report


def _first_cpu() -> dict[str, str]:
    """The fields of /proc/cpuinfo's first processor block ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def _cpuinfo() -> tuple[str, set[str]]:
    fields = _first_cpu()
    name = fields.get("model name", "")
    return name or platform.processor() or platform.machine() or "unknown", set(fields.get("flags", "").split())


def _cpu_id() -> str | None:
    """'family F model M' from /proc/cpuinfo: virtual machines often name every AMD EPYC "AMD EPYC", though two
    generations differ 2x in bf16 matmul rate (family 25 is Zen 3/4, 26 Zen 5); None where it is not there."""
    fields = _first_cpu()
    if "cpu family" not in fields or "model" not in fields:
        return None
    return f"family {fields['cpu family']} model {fields['model']}"


def info() -> dict:
    """{"cpu", "cpu_id", "isa", "cores", "threads", "torch", "cuda"} of this process's machine."""
    import torch

    name, flags = _cpuinfo()
    return {"cpu": name, "cpu_id": _cpu_id(), "isa": [f for f in _ISA if f in flags], "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def describe(record: dict | None) -> str:
    """One line for a reader: 'AMD EPYC [family 25 model 17] (avx512_bf16), 2 threads, torch 2.13.0+cpu' (records
    made before `cpu_id` was recorded read without the brackets)."""
    if not record:
        return "machine not recorded"
    isa = [f for f in record.get("isa", []) if f.startswith(("amx", "avx512_bf16"))] or record.get("isa", [])[:1]
    gpu = f", {record['cuda']}" if record.get("cuda") else ""
    flags = f" ({', '.join(isa)})" if isa else ""
    cpu_id = f" [{record['cpu_id']}]" if record.get("cpu_id") else ""
    return f"{record.get('cpu', '?')}{cpu_id}{flags}, {record.get('threads', '?')} threads, torch {record.get('torch', '?')}{gpu}"


def same(a: dict | None, b: dict | None) -> bool:
    """Whether two records name one kind of machine (CPU, extensions, threads, torch, GPU): the condition under
    which a regenerated figure is expected to be bit-identical."""
    keys = ("cpu", "isa", "threads", "torch", "cuda")
    ids = (a or {}).get("cpu_id"), (b or {}).get("cpu_id")  # compared where both records have one
    return bool(a and b) and all(a.get(k) == b.get(k) for k in keys) and (None in ids or ids[0] == ids[1])
