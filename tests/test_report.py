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
