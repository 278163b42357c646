# One entry point. `make demo` runs the main job, `make test` runs the tests; both create
# the virtual environment $(VENV) (default .venv) on first use, with $(PYTHON) (default
# python3), and reinstall when pyproject.toml or this Makefile change. torch is installed
# first, pinned, so that pip takes a CPU build on disk where there is one (/opt/wheels holds
# a CPython 3.11 one) instead of downloading the CUDA build from PyPI (about 3 GB with its
# nvidia libraries; it runs on the CPU too).
#
# Another Python, in its own venv:   make test PYTHON=python3.13 VENV=.venv-3.13
# The test suite only (no docs):     make pytest PYTHON=python3.10 VENV=.venv-3.10
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.probseq-installed
# extra pytest arguments of `make pytest`, e.g. PYTEST_ARGS='-m "not slow"'
PYTEST_ARGS ?=

.PHONY: install demo test pytest lint bench bench-against notebooks docs clean

# A venv made by another Python than the one asked for is refused, not silently used.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@want=$$($(PYTHON) -c 'import sys; print(sys.version_info[:2])') && \
	have=$$($(PY) -c 'import sys; print(sys.version_info[:2])') && \
	if [ "$$want" != "$$have" ]; then \
	  echo "$(VENV) holds Python $$have, not $(PYTHON)'s $$want: remove it or pass VENV=" >&2; \
	  exit 1; fi
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m probseq compare --overwrite

# The suite runs on every core (pytest-xdist), then the documentation is built with every
# warning an error; the build is where the notebooks run (once each).
test: $(STAMP)
	$(PY) -m ruff check probseq tests benchmarks
	$(PY) -m pytest -q -n auto
	$(MAKE) docs PYTHON=$(PYTHON) VENV=$(VENV)

# The test suite alone, on every core: what .ci/run runs on the other supported Pythons.
pytest: $(STAMP)
	$(PY) -m pytest -q -n auto $(PYTEST_ARGS)

# The documentation site (Sphinx + MyST-NB) in docs/_build/html. It executes every notebook
# once, all in parallel, and fails on any warning or notebook error.
# PROBSEQ_NB_EXECUTION=cache reuses the outputs of unchanged notebooks, =off skips execution.
docs: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check probseq tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks

# Regression guard: probseq's own calls, working tree against revision REV, side by side
# (make bench-against REV=HEAD~1 ONLY=hmm_batched,lgssm_batched).
bench-against: $(STAMP)
	$(PY) -m benchmarks --against $(or $(REV),HEAD) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) report backtest docs/_build docs/generated docs/api.md
