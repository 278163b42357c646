# One entry point. `make demo` runs the main job, `make test` runs the tests; both create
# the local virtual environment .venv on first use. torch is installed first, pinned, so
# that pip takes the CPU build on disk instead of downloading a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.probseq-installed

.PHONY: install demo test lint bench notebooks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m probseq compare --out report

# The suite runs on every core (pytest-xdist): about 4 minutes on 2 cores.
test: $(STAMP)
	$(PY) -m ruff check probseq tests benchmarks
	$(PY) -m pytest -q -n auto

lint: $(STAMP)
	$(PY) -m ruff check probseq tests benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) report
