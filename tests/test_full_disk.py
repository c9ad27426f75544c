"""A real small filesystem (a tmpfs mounted for the test; skipped where mounting is not allowed): collecting
activations into a cache that cannot hold them is a clear error; one that fills up while collecting still
finishes (its blocks were reserved first) or fails clearly; never a wrong array marked valid, and once there is
room the rerun gives the array a roomy disk gives."""

import os
import re
import subprocess

import numpy as np
import pytest

from saesanity import activations as A
from saesanity import cache


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")

    def resize(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield mnt, resize
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder) -> None:
    """Write a filler file until the filesystem is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def _cache_on(mnt, reference_cache):
    c = mnt / "cache"
    c.mkdir()
    for shared in os.listdir(reference_cache):  # the models, Debian text and token streams live elsewhere
        if shared != "activations":
            (c / shared).symlink_to(reference_cache / shared)
    return c


@pytest.fixture
def reference(iso_cache, tiny_llama_dir):
    spec = A.ActivationSpec(model=str(tiny_llama_dir), variant="trained", corpus="debian:fortunes", n_tokens=630,
                            seq_len=64, seed=0)
    want = np.array(A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"])
    assert want.nbytes > 64 * 1024  # more than the small filesystem holds
    return spec, want, iso_cache


def _valid_arrays(c) -> list:
    return [p for p in (c / "activations").iterdir() if cache.is_valid(p)] if (c / "activations").exists() else []


def test_a_cache_too_small_for_the_activations_is_a_clear_error_then_resumes(reference, small_fs, monkeypatch):
    spec, want, ref_cache = reference
    mnt, resize = small_fs
    monkeypatch.setenv("SAESANITY_CACHE", str(_cache_on(mnt, ref_cache)))
    with pytest.raises(A.ActivationError, match=r"need 80\.6 kB more; only \d+\.\d kB free under .*small/cache/activations"):
        A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)
    assert _valid_arrays(mnt / "cache") == []
    resize("4m")
    got = A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
    np.testing.assert_array_equal(got, want)


def test_a_disk_that_fills_up_while_collecting_never_leaves_a_wrong_array(reference, small_fs, monkeypatch):
    spec, want, ref_cache = reference
    mnt, resize = small_fs
    resize("4m")
    monkeypatch.setenv("SAESANITY_CACHE", str(_cache_on(mnt, ref_cache)))
    real = A._fresh_array

    def then_fill(*args):
        arr = real(*args)
        _fill(mnt)  # another process takes every free block once the array is reserved
        return arr

    monkeypatch.setattr(A, "_fresh_array", then_fill)
    try:
        got = A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
        np.testing.assert_array_equal(got, want)  # the reserved blocks were enough
    except cache.DiskFullError as err:  # the reserved array was enough, its small side files were not
        assert re.fullmatch(r"no space left under .*small/cache/activations \(\d+ B free\) while computing "
                            r"activations \w+: free space or set SAESANITY_CACHE elsewhere, then rerun \(its "
                            r"partial work is kept and resumes\)", str(err)), str(err)
        assert _valid_arrays(mnt / "cache") == []
        (mnt / "filler").unlink()
        monkeypatch.setattr(A, "_fresh_array", real)
        got = A.collect(spec, ["resid_post.1"], batch_size=4, progress=False)["resid_post.1"]
        np.testing.assert_array_equal(got, want)
