import json

import pytest

from saesanity import report
from saesanity.paths import REPO_ROOT


def test_readme_results_match_the_jsons():
    """README's Results block is exactly what the committed figures/*.json render to."""
    assert report.main(["--check"]) == 0


def test_updated_readme_replaces_only_the_block():
    text = f"intro\n{report.START}\nold\n{report.END}\noutro\n"
    assert report.updated_readme(text, "new") == f"intro\n{report.START}\nnew\n{report.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        report.updated_readme("no markers", "x")


def test_report_example_block_comes_from_the_command_the_makefile_runs():
    """The README's `saesanity report` example is rendered from figures/report/report.json, which the
    Makefile makes with exactly the command the block quotes."""
    make = (REPO_ROOT / "Makefile").read_text().replace("\\\n\t  ", "")
    assert report.EXAMPLE_COMMAND.replace("saesanity report", "$(VENV)/bin/saesanity report") in make
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(report.EXAMPLE_START, 1)[1].split(report.EXAMPLE_END, 1)[0].strip()
    assert block == report.render_example().strip()
