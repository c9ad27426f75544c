import pytest

from saesanity import readme
from saesanity.paths import REPO_ROOT


def test_readme_results_match_the_jsons():
    """README's Results block is exactly what the committed figures/*.json render to."""
    assert readme.main(["--check"]) == 0


def test_updated_readme_replaces_only_the_block():
    text = f"intro\n{readme.START}\nold\n{readme.END}\noutro\n"
    assert readme.updated_readme(text, "new") == f"intro\n{readme.START}\nnew\n{readme.END}\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        readme.updated_readme("no markers", "x")


def test_report_example_block_comes_from_the_command_the_makefile_runs():
    """The README's `saesanity report` example is rendered from figures/report/report.json, which the
    Makefile makes with exactly the command the block quotes."""
    make = (REPO_ROOT / "Makefile").read_text().replace("\\\n\t  ", "")
    assert readme.EXAMPLE_COMMAND.replace("saesanity report", "$(VENV)/bin/saesanity report") in make
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split(readme.EXAMPLE_START, 1)[1].split(readme.EXAMPLE_END, 1)[0].strip()
    assert block == readme.render_example().strip()
