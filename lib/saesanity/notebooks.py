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


def clean_executed(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    pm = nb.metadata.get("papermill", {})
    for key in _VOLATILE:
        pm.pop(key, None)
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
                out["text"] = _collapse_carriage_returns(out["text"])
            if "text/plain" in out.get("data", {}):  # object reprs carry memory addresses
                out["data"]["text/plain"] = re.sub(r" at 0x[0-9a-f]+", "", out["data"]["text/plain"])
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
