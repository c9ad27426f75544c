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


BF16_ISA = ("amx_bf16", "avx512_bf16")  # the CPU instructions that make bf16 matmuls faster than fp32


def bf16_fast(device: str = "cpu") -> bool:
    """Whether bf16 is the fast matmul precision on `device`. On a CPU: where it has bf16 matrix instructions
    (AMX-BF16 on Intel, AVX512-BF16 on AMD and Intel); without them oneDNN emulates bf16, far slower than fp32
    (measured here: 1 GFLOP/s vs 148 on an AVX2-only AMD EPYC [family 25 model 1], 2 threads;
    bench/bench_model_dtype.py). On CUDA: where torch says the device supports bf16. Decided by the flags, not a
    timing, so one machine always makes the same choice (and so the same numbers)."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind != "cpu":
        return False
    return bool(_cpuinfo()[1] & set(BF16_ISA))


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """A forward-pass dtype with "auto" resolved: "bfloat16" where `bf16_fast(device)`, else "float32"."""
    return ("bfloat16" if bf16_fast(device) else "float32") if dtype == "auto" else dtype


def resolve_autocast(autocast: str, device: str = "cpu") -> str:
    """An SAE-training autocast with "auto" resolved: "bf16" where `bf16_fast(device)`, else "none" (fp32)."""
    return ("bf16" if bf16_fast(device) else "none") if autocast == "auto" else autocast


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
