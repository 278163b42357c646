"""The documentation a user reads: public ``fit`` docstrings name every option, and no
docstring, notebook or documentation page sends the reader to a file outside the repository.

The site itself is built (with warnings as errors, notebooks executed) by ``make docs``,
which ``make test`` runs after this suite.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
from pathlib import Path

import pytest

import probseq
from probseq.base import SequenceModel

ROOT = Path(__file__).resolve().parent.parent

MODEL_CLASSES = sorted(
    (obj for obj in (getattr(probseq, n) for n in probseq.__all__)
     if isinstance(obj, type) and issubclass(obj, SequenceModel) and not inspect.isabstract(obj)),
    key=lambda c: c.__name__,
)

#: Public model classes without a ``fit`` of their own yet (``help(cls.fit)`` shows only the
#: generic base docstring): expected failures while they lack one. As soon as a class has
#: its own ``fit`` the check runs for real, listed or not.
NO_PUBLIC_FIT_YET = {
    "MarkovChain",
}


def _fit_options(cls: type) -> list[str]:
    """The keywords of ``cls.fit`` (everything but ``self``, the data and ``**unknown``)."""
    params = list(inspect.signature(cls.fit).parameters.values())[1:]  # drop self
    return [p.name for p in params[1:]  # drop the data argument
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]


def test_model_classes_found():
    assert len(MODEL_CLASSES) >= 6, [c.__name__ for c in MODEL_CLASSES]
    unknown = NO_PUBLIC_FIT_YET - {c.__name__ for c in MODEL_CLASSES}
    assert not unknown, f"not public model classes: {sorted(unknown)}"


@pytest.mark.parametrize("cls", MODEL_CLASSES, ids=[c.__name__ for c in MODEL_CLASSES])
def test_fit_docstring_names_every_option(cls):
    if "fit" not in vars(cls):
        if cls.__name__ in NO_PUBLIC_FIT_YET:
            pytest.xfail(f"{cls.__name__} has no public fit of its own yet")
        pytest.fail(f"{cls.__name__}.fit is the base class's generic fit")
    doc = inspect.getdoc(cls.fit) or ""
    options = _fit_options(cls)
    assert options, f"{cls.__name__}.fit takes no keyword options"
    missing = [o for o in options if not re.search(rf"\b{re.escape(o)}\b", doc)]
    assert not missing, f"{cls.__name__}.fit's docstring does not name {missing}"


def test_fit_options_helper_reads_the_signature():
    class Example:
        def fit(self, data, *, alpha=1.0, beta="x", **unknown):
            """Uses alpha only."""

    assert _fit_options(Example) == ["alpha", "beta"]


# ------------------------------------------------------------ references to outside files
#: design notes of the team that live outside the repository.
OUTSIDE_NOTES = re.compile(r"\bCONTRACT\b|\bSPEC\.md\b|\bSTYLE\.md\b|\bPREAMBLE\b|/work/")
#: a path-like token naming a document (notes, pages, notebooks); references to other
#: projects' source files (Pyro's ``examples/dmm.py``) are citations, not checked here.
FILE_REF = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:md|rst|ipynb))\b")


def _repo_files() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    return set(out)


def _docstrings(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield getattr(node, "name", "<module>"), doc


def _texts():
    """(where, text) for every docstring, notebook cell and documentation page."""
    for folder in ("probseq", "tests", "benchmarks", "docs"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "_build" in path.parts:
                continue
            for name, doc in _docstrings(path):
                yield f"{path.relative_to(ROOT)}:{name}", doc
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            yield f"{path.relative_to(ROOT)} cell {i}", "".join(cell["source"])
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        if "_build" not in path.parts and path.name != "api.md":
            yield str(path.relative_to(ROOT)), path.read_text()


def _outside_references(text: str, files: set[str]) -> list[str]:
    bad = [m.group(0) for m in OUTSIDE_NOTES.finditer(text)]
    names = {f.rsplit("/", 1)[-1] for f in files}
    for m in FILE_REF.finditer(text):
        ref = m.group(1)
        if ref in files or ref.rsplit("/", 1)[-1] in names:
            continue
        if any(f.endswith("/" + ref) for f in files):
            continue
        bad.append(ref)
    return bad


def test_outside_reference_check_can_fail():
    files = {"probseq/base.py", "benchmarks/results.md", "README.md"}
    assert _outside_references("named as in CONTRACT.md", files) == ["CONTRACT", "CONTRACT.md"]
    assert _outside_references("see notes/design.md", files) == ["notes/design.md"]
    assert _outside_references("see benchmarks/results.md and README.md", files) == []
    assert _outside_references("a float like 1.5 or x.md_attr is no file", files) == []


def test_no_reference_to_files_outside_the_repository():
    files = _repo_files()
    found = {where: refs for where, text in _texts()
             if (refs := _outside_references(text, files))}
    assert not found, f"references to files outside the repository: {found}"
