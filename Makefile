# One entry point. `make demo` runs the main job, `make test` runs the tests; both create
# the local virtual environment .venv on first use. torch is installed first, pinned, so
# that pip takes the CPU build on disk instead of downloading a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.probseq-installed

.PHONY: install demo test lint bench notebooks docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
	$(MAKE) docs

# The documentation site (Sphinx + MyST-NB) in docs/_build/html. It executes every notebook
# once, all in parallel, and fails on any warning or notebook error.
# PROBSEQ_NB_EXECUTION=cache reuses the outputs of unchanged notebooks, =off skips execution.
docs: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html

lint: $(STAMP)
	$(PY) -m ruff check probseq tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) report backtest docs/_build docs/generated docs/api.md
