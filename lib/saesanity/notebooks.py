"""Notebook hygiene: strip outputs from source notebooks, drop volatile metadata from executed ones.

    python -m saesanity.notebooks clean <executed.ipynb>   # timestamps out, progress bars collapsed
    python -m saesanity.notebooks strip <source.ipynb>...  # outputs and execution counts out
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

_VOLATILE = ("start_time", "end_time", "duration", "exception")


_TQDM_TIMING = re.compile(r" ?\[\d[\d:]*<[^\]]*\]")  # "[00:12<00:30, 465.84it/s]": elapsed, remaining, rate


def _collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show (the text after each line's last carriage return), minus the
    progress bars' elapsed/remaining/rate field, which differs on every run."""
    return "\n".join(_TQDM_TIMING.sub("", line.rsplit("\r", 1)[-1]) for line in text.split("\n"))


# an absolute path of this machine's layout inside an output (a warning's file name, a repr)
_ABSOLUTE = re.compile(r"(?<![\w.~<>-])/(?:tmp|home|root|work|usr|opt|var|srv|mnt|Users|private|scratch)/[^\s'\"\])]*")


def _local_roots() -> list[tuple[str, str]]:
    """(this machine's folder, what a reader sees instead), longest first: installed packages, the cache, the
    figures folder, the repository, the home folder."""
    import os
    import sysconfig

    from .paths import REPO_ROOT, cache_dir, figures_dir

    roots = [(sysconfig.get_paths()["purelib"], "<site-packages>"), (sysconfig.get_paths()["stdlib"], "<python>"),
             (str(cache_dir()), "<cache>"), (str(figures_dir()), "<figures>"), (str(REPO_ROOT), "<repo>"),
             (os.path.expanduser("~"), "~")]
    return sorted({(str(Path(a).resolve()), b) for a, b in roots} | set(roots), key=lambda r: -len(r[0]))


# the file name IPython gives a cell's code in warnings and tracebacks: /tmp/ipykernel_<pid>/<hash>.py
_CELL_FILE = re.compile(r"(?:/[^\s:'\"]*)?/ipykernel_\d+/\d+\.py")


def _relative(text: str, roots: list[tuple[str, str]]) -> str:
    text = _CELL_FILE.sub("<cell>", text)
    for root, name in roots:
        if root not in ("", "/"):
            text = text.replace(root, name)
    return text


def absolute_paths(nb) -> list[str]:
    """Absolute paths of this machine's layout left in `nb`'s outputs (what `clean_executed` must not leave): paths
    under the usual top-level folders, and any path under this machine's own roots (the repository, the cache, the
    installed packages), wherever those live (CI checks out under /check)."""
    mine = [re.escape(root) for root, _ in _local_roots() if root not in ("", "/")]
    pattern = re.compile(_ABSOLUTE.pattern + "|" + "|".join(f"(?<![\\w.~<>-]){m}[^\\s'\"\\])]*" for m in mine))
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
            texts += out.get("traceback", [])
            for t in texts:
                found += pattern.findall(t if isinstance(t, str) else "".join(t))
    return found


def image_outputs(nb) -> int:
    """How many image outputs (PNG / SVG / JPEG) `nb` holds."""
    return sum(any(k.startswith("image/") for k in out.get("data", {})) for cell in nb.cells
               for out in cell.get("outputs", []))


def clean_executed(path: Path) -> None:
    """Drop what differs from run to run (timestamps, progress-bar timings, memory addresses, random ids) and this
    machine's folders: paths in outputs and papermill's metadata are shown relative to the repository, the cache,
    the figures folder or the installed packages (`<repo>`, `<cache>`, `<figures>`, `<site-packages>`)."""
    nb = nbformat.read(path, as_version=4)
    roots = _local_roots()
    pm = nb.metadata.get("papermill", {})
    for key in _VOLATILE:
        pm.pop(key, None)
    for key in ("input_path", "output_path"):
        if isinstance(pm.get(key), str):
            pm[key] = _relative(pm[key], roots)
    pm.pop("cwd", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell["id"] = "injected-parameters"  # papermill draws a random id on every run
        cell.metadata.pop("execution", None)
        for key in _VOLATILE:
            cell.metadata.get("papermill", {}).pop(key, None)
        merged = []  # a kernel flushes a progress bar as many stream outputs; join them before collapsing
        for out in cell.get("outputs", []):
            prev = merged[-1] if merged else None
            if (out.get("output_type") == "stream" and prev is not None and prev.get("output_type") == "stream"
                    and prev.get("name") == out.get("name")):
                prev["text"] += out["text"]
            else:
                merged.append(out)
        cell["outputs"] = merged
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = _relative(_collapse_carriage_returns(out["text"]), roots)
            for kind in [k for k in out.get("data", {}) if k.startswith("text/")]:
                text = out["data"][kind]
                text = "".join(text) if isinstance(text, list) else text
                if kind == "text/plain":  # object reprs carry memory addresses
                    text = re.sub(r" at 0x[0-9a-f]+", "", text)
                out["data"][kind] = _relative(text, roots)
    nbformat.write(nb, path)


def strip_outputs(path: Path) -> bool:
    """Remove outputs and execution counts; return True when the file changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(nb, path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("clean", "strip"):
        print(__doc__, file=sys.stderr)
        return 2
    for p in argv[1:]:
        (clean_executed if argv[0] == "clean" else strip_outputs)(Path(p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
