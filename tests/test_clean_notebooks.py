import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from saesanity.notebooks import clean_executed


def test_progress_bar_flushes_collapse_to_the_final_state(tmp_path):
    outs = [new_output("stream", name="stderr", text="\rSAE seed 0:   0%|  | 0/10 [00:00<?, ?step/s]"),
            new_output("stream", name="stderr", text="\rSAE seed 0:  50%|# | 5/10 [00:01<00:01, 4.2step/s, fvu=0.5]"),
            new_output("stream", name="stderr", text="\rSAE seed 0: 100%|##| 10/10 [00:02<00:00, 4.1step/s]\n"),
            new_output("stream", name="stdout", text="done\n")]
    nb = new_notebook(cells=[new_code_cell("x", outputs=outs)])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    clean_executed(path)
    got = nbformat.read(path, 4).cells[0].outputs
    assert [o["text"] for o in got] == ["SAE seed 0: 100%|##| 10/10\n", "done\n"]


def test_machine_paths_become_relative_and_leaks_are_found(tmp_path, monkeypatch):
    import sysconfig

    from saesanity import paths
    from saesanity.notebooks import absolute_paths, image_outputs

    monkeypatch.setenv("SAESANITY_CACHE", str(tmp_path / "c"))
    site = sysconfig.get_paths()["purelib"]
    outs = [new_output("stream", name="stderr", text=f"{site}/transformers/x.py:3: FutureWarning: old\n"),
            new_output("execute_result", data={"text/plain": f"PosixPath('{paths.REPO_ROOT}/figures/a.png')"}),
            new_output("stream", name="stdout", text=f"saved to {tmp_path / 'c'}/sae/abc\n"),
            new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}),
            new_output("stream", name="stderr", text="/tmp/ipykernel_25413/2593963909.py:4: ConstantInputWarning\n")]
    nb = new_notebook(cells=[new_code_cell("x", outputs=outs)])
    nb.metadata["papermill"] = {"input_path": f"{paths.REPO_ROOT}/notebooks/a.ipynb", "cwd": str(paths.REPO_ROOT)}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert len(absolute_paths(nbformat.read(path, 4))) == 4 and image_outputs(nbformat.read(path, 4)) == 1
    clean_executed(path)
    got = nbformat.read(path, 4)
    assert absolute_paths(got) == []
    texts = [o.get("text") or o["data"]["text/plain"] for o in got.cells[0].outputs]
    assert texts[:3] == ["<site-packages>/transformers/x.py:3: FutureWarning: old\n",
                         "PosixPath('<figures>/a.png')", "saved to <cache>/sae/abc\n"]
    assert got.cells[0].outputs[4]["text"] == "<cell>:4: ConstantInputWarning\n"
    assert got.metadata["papermill"] == {"input_path": "<repo>/notebooks/a.ipynb"}
    assert absolute_paths(new_notebook(cells=[new_code_cell("x", outputs=[
        new_output("stream", name="stdout", text="see /home/someone/x.txt and /tmp/y")])])) == \
        ["/home/someone/x.txt", "/tmp/y"]


def test_a_checkout_under_an_unusual_top_folder_is_still_caught_and_cleaned(tmp_path, monkeypatch):
    """CI checks the repository out under /check: a path under this machine's own roots is a leak wherever the
    roots live, not only under /home, /work, /tmp…"""
    from pathlib import Path

    from saesanity import paths
    from saesanity.notebooks import absolute_paths

    monkeypatch.setattr(paths, "REPO_ROOT", Path("/check/work/main"))
    monkeypatch.setenv("SAESANITY_FIGURES", "/check/work/main/figures")
    outs = [new_output("execute_result", data={"text/plain": "PosixPath('/check/work/main/notebooks/a.ipynb')"})]
    nb = new_notebook(cells=[new_code_cell("x", outputs=outs)])
    assert absolute_paths(nb) == ["/check/work/main/notebooks/a.ipynb"]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    clean_executed(path)
    got = nbformat.read(path, 4)
    assert got.cells[0].outputs[0]["data"]["text/plain"] == "PosixPath('<repo>/notebooks/a.ipynb')"
    assert absolute_paths(got) == []
