"""Every notebook, executed by papermill on its `smoke` profile, writes its figure and JSON."""

import json
import os
import subprocess
import sys

import pytest

from saesanity import paths

STEMS = sorted(p.stem for p in paths.NOTEBOOKS_DIR.glob("*.ipynb"))
# keys the README and later notebooks read from each JSON
REQUIRED = {
    "paulo_fig1_matched_cosines": ["compared.shared_frac_paper.ours", "compared.shared_frac_paper.paper",
                                   "compared.agree_frac.ours", "compared.mean_matched_dec_cos.ours",
                                   "compared.mean_matched_enc_cos.ours", "heldout", "scale", "setup"],
}


def _get(doc, dotted):
    for part in dotted.split("."):
        doc = doc[part]
    return doc


@pytest.mark.notebook
@pytest.mark.parametrize("stem", STEMS)
def test_notebook_smoke(stem, iso_cache, tmp_path):
    flat = tmp_path / "params.yaml"
    flat.write_text(subprocess.run([sys.executable, "-m", "saesanity.params", stem, "smoke"], check=True,
                                   capture_output=True, text=True).stdout)
    out_nb = tmp_path / f"{stem}.ipynb"
    env = dict(os.environ, TQDM_DISABLE="1")
    subprocess.run([sys.executable, "-m", "papermill", "--no-progress-bar", "-k", "saesanity", "-f", str(flat),
                    "--cwd", str(paths.NOTEBOOKS_DIR), str(paths.NOTEBOOKS_DIR / f"{stem}.ipynb"), str(out_nb)],
                   check=True, env=env, capture_output=True)
    figs = tmp_path / "figures"
    for ext in ("png", "pdf", "json"):
        assert (figs / f"{stem}.{ext}").stat().st_size > 0
    doc = json.loads((figs / f"{stem}.json").read_text())
    assert doc["profile"] == "smoke" and doc["setup"] == "smoke"
    for key in REQUIRED.get(stem, []):
        _get(doc, key)
    assert stem in REQUIRED, f"list the JSON keys {stem} must provide in REQUIRED"
