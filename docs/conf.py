"""Sphinx configuration of the probseq documentation (MyST-NB, furo, autodoc).

The API page lists every name of ``probseq.__all__``: it is written at build time (and not
tracked), so a new public name is documented without editing this site.
Notebooks (``notebooks/``, stored without outputs) are executed by the build.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# Notebook kernels are subprocesses: they must import this checkout's probseq too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
# Figures of the kernels go into the pages, whatever MPLBACKEND the caller set (e.g. Agg).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
# Pyro imports tqdm.auto, which in a kernel without ipywidgets warns "IProgress not found"
# at import, from a file of the builder's environment: no page shows that warning.
# no progress bars in the built pages (a notebook's kernel shows them by default)
os.environ["PROBSEQ_PROGRESS"] = "0"
os.environ["PYTHONWARNINGS"] = ",".join(
    [*filter(None, [os.environ.get("PYTHONWARNINGS")]), "ignore:IProgress not found"])


_WARNINGS_STARTUP = """\
import warnings


def _format_warning(message, category, filename, lineno, line=None):
    return f"{category.__name__}: {message}\\n"


warnings.formatwarning = _format_warning
del _format_warning
"""


def _kernel_profile() -> None:
    """Kernels start in an IPython profile of this build (``_build/ipython``), which

    - prints a warning as ``Category: message``, without the file it came from, so that no
      page shows a path of the machine that built it (``/tmp/ipykernel_*/...``, a venv's
      ``site-packages``);
    - logs the kernel application's own messages from ERROR up, so that the build log is
      free of ipykernel's "Kernel is running over TCP without encryption" warning (the
      kernels talk to the build on localhost; MyST-NB passes no transport setting on).
    """
    ipython_dir = DOCS / "_build" / "ipython"
    startup = ipython_dir / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-warnings.py").write_text(_WARNINGS_STARTUP)
    (ipython_dir / "profile_default" / "ipython_kernel_config.py").write_text(
        'c.IPKernelApp.log_level = "ERROR"\n')
    os.environ["IPYTHONDIR"] = str(ipython_dir)


_kernel_profile()

import probseq  # noqa: E402

project = "probseq"
author = "the probseq developers"
copyright = "the probseq developers"
release = version = probseq.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    # MathJax 3 copied into _static/mathjax of the built site, and the pages pointed at it:
    # equations render with no network (and no CDN).
    "sphinx-mathjax-offline",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

html_theme = "furo"
html_title = f"probseq {release}"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: executed on every build (the repository keeps them output-free); an error in a
# cell fails the build. PROBSEQ_NB_EXECUTION picks how:
#   "parallel" (default): every notebooks/*.ipynb runs afresh, all at once on the machine's
#       cores, before Sphinx reads them (jupyter-cache's local-parallel executor); the pages
#       then take their outputs from that cache. A notebook that failed there is run again
#       while its page is read, and its error fails the build.
#   "cache": keep the outputs of notebooks whose code did not change since the last build
#       (quick local rebuilds; outputs may be stale after library changes);
#   "off": no execution (pages without outputs).
NB_EXECUTION = os.environ.get("PROBSEQ_NB_EXECUTION", "parallel")
if NB_EXECUTION not in ("parallel", "cache", "off"):
    raise ValueError(f"PROBSEQ_NB_EXECUTION must be parallel, cache or off, got {NB_EXECUTION!r}")
nb_execution_mode = "off" if NB_EXECUTION == "off" else "cache"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_merge_streams = True

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
# "Attributes:" sections as field lists: a documented property of the same name is no duplicate.
napoleon_use_ivar = True


def _api_page() -> str:
    """The API reference: one autosummary table per kind of public name."""
    classes, functions, modules, other = [], [], [], []
    for name in probseq.__all__:
        obj = getattr(probseq, name)
        if isinstance(obj, types.ModuleType):
            modules.append(name)
        elif isinstance(obj, type):
            classes.append(name)
        elif callable(obj):
            functions.append(name)
        else:
            other.append(name)
    out = [
        "# API reference",
        "",
        "Every public name of `probseq` (its `__all__`), generated from the docstrings. Shapes",
        "use the letters N (sequences), T (steps), K (states), S (latent dimension),",
        "D (observation dimension) and V (symbols).",
        "",
    ]
    for title, names, template in [
        ("Models and data", classes, "class.rst"),
        ("Functions", functions, "function.rst"),
        ("Modules", modules, "module.rst"),
        ("Other names", other, None),
    ]:
        if not names:
            continue
        out += [f"## {title}", "", "```{eval-rst}",
                ".. autosummary::", "   :toctree: generated", "   :nosignatures:"]
        if template:
            out.append(f"   :template: autosummary/{template}")
        out += [""] + [f"   probseq.{n}" for n in names] + ["```", ""]
    return "\n".join(out)


def _write_api_page(app, config) -> None:
    # Stub pages of names that left __all__ would be orphans: autosummary rewrites the rest.
    for stub in (DOCS / "generated").glob("*.rst"):
        if stub.stem.removeprefix("probseq.") not in probseq.__all__:
            stub.unlink()
    page = DOCS / "api.md"
    text = _api_page()
    if not page.exists() or page.read_text() != text:  # unchanged: keep Sphinx's cache
        page.write_text(text)


def _execute_notebooks(app, config) -> None:
    """Run every notebook at once, in a fresh cache that the pages then read."""
    if NB_EXECUTION != "parallel":
        return
    import shutil

    from jupyter_cache import get_cache
    from jupyter_cache.executors import load_executor

    shutil.rmtree(nb_execution_cache_path, ignore_errors=True)
    cache = get_cache(nb_execution_cache_path)
    for path in sorted((DOCS / "notebooks").glob("*.ipynb")):
        cache.add_nb_to_project(str(path))
    load_executor("local-parallel", cache).run_and_cache(timeout=nb_execution_timeout)


def _check_offline(app, exc) -> None:
    """The built pages load no script from the network, and the local MathJax is there."""
    if exc is not None or app.builder.format != "html":
        return
    import re

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    out = Path(app.outdir)
    remote = re.compile(r"<script[^>]*\ssrc=\"(?:https?:)?//([^\"]*)")
    for page in sorted(out.rglob("*.html")):
        found = remote.search(page.read_text(encoding="utf-8"))
        if found:
            logger.warning("%s loads a script from the network (%s): the site must work "
                           "offline", page.relative_to(out), found.group(1))
    if not (out / "_static" / app.config.mathjax_path).is_file():
        logger.warning("MathJax is missing from the built site (_static/%s)",
                       app.config.mathjax_path)


def setup(app):
    app.connect("config-inited", _write_api_page)
    app.connect("config-inited", _execute_notebooks)
    app.connect("build-finished", _check_offline)
