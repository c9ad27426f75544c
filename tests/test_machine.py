import torch

from saesanity import machine

AMD = {"cpu": "AMD EPYC", "isa": ["avx512_bf16", "avx512f", "avx2"], "cores": 2, "threads": 2,
       "torch": "2.13.0+cpu", "cuda": None}
INTEL = {**AMD, "cpu": "Intel(R) Xeon(R) Platinum 8488C", "isa": ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f"]}


def test_this_machine_is_recorded_with_what_changes_bf16_results():
    r = machine.info()
    assert r["cpu"] and r["threads"] >= 1 and r["torch"].startswith("2.")
    assert set(r["isa"]) <= set(machine._ISA)
    assert machine.same(r, dict(r)) and not machine.same(r, {**r, "threads": r["threads"] + 1})


def test_records_read_as_one_line_and_compare_by_kind_of_machine():
    assert machine.describe(AMD) == "AMD EPYC (avx512_bf16), 2 threads, torch 2.13.0+cpu"
    assert machine.describe(INTEL).startswith("Intel(R) Xeon(R) Platinum 8488C (amx_bf16, amx_tile, avx512_bf16)")
    assert machine.describe(None) == "machine not recorded"
    assert not machine.same(AMD, INTEL) and not machine.same(AMD, None)
    assert machine.same(AMD, {**AMD, "cores": 64})  # the core count does not change results; threads do


def test_the_cpu_generation_is_recorded_and_compared_where_both_records_have_it():
    zen4, zen5 = {**AMD, "cpu_id": "family 25 model 17"}, {**AMD, "cpu_id": "family 26 model 2"}
    assert machine.describe(zen4) == "AMD EPYC [family 25 model 17] (avx512_bf16), 2 threads, torch 2.13.0+cpu"
    assert not machine.same(zen4, zen5) and machine.same(zen4, dict(zen4))
    assert machine.same(zen4, AMD)  # a record from before cpu_id existed: the other fields decide
    r = machine.info()
    if open("/proc/cpuinfo").read().count("cpu family"):
        assert r["cpu_id"].startswith("family ") and " model " in r["cpu_id"]


def test_bf16_is_chosen_where_the_cpu_has_bf16_matrix_instructions_and_fp32_elsewhere(monkeypatch):
    for flags, fast in [({"avx2", "avx512f", "avx512_bf16"}, True), ({"amx_bf16", "amx_tile"}, True),
                        ({"avx2"}, False), ({"avx2", "avx512f"}, False), (set(), False)]:
        monkeypatch.setattr(machine, "_cpuinfo", lambda flags=flags: ("some CPU", flags))
        assert machine.bf16_fast("cpu") is fast
        assert machine.resolve_dtype("auto", "cpu") == ("bfloat16" if fast else "float32")
        assert machine.resolve_autocast("auto", "cpu") == ("bf16" if fast else "none")
        # an explicit choice is kept whatever the CPU
        assert machine.resolve_dtype("bfloat16") == "bfloat16" and machine.resolve_dtype("float32") == "float32"
        assert machine.resolve_autocast("none") == "none" and machine.resolve_autocast("bf16") == "bf16"
    assert machine.bf16_fast("mps") is False
    assert machine.bf16_fast("cuda") is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def test_bf16_fast_reads_this_machines_flags():
    flags = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split())
    assert machine.bf16_fast() is bool(flags & {"amx_bf16", "avx512_bf16"})
