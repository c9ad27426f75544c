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
