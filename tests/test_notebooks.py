"""The notebooks are stored without outputs; `make docs` (run by `make test`) executes each
of them once, top to bottom, and fails on any error, so they are not executed here too."""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    with_outputs = [i for i, c in enumerate(nb.cells)
                    if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
    assert not with_outputs, f"commit {path.name} without outputs (cells {with_outputs})"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
