# One front door: `make test` and `make demo` set everything up on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.horkd-installed
# Pinned to the wheels this project is developed and tested with.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: test test-all demo results lint bench fashion-mnist clean api

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Every core runs tests (pytest-xdist), one thread each so the workers do not crowd each other;
# a file's tests stay on one worker (its module fixtures are built once). About 17 minutes on 2
# cores shared with other work.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --dist loadfile
	$(VENV)/bin/ruff check src tests benchmarks

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# Debian ships Fashion-MNIST as a package; install it when missing and apt is usable.
fashion-mnist:
	@if [ ! -d $(FMNIST_DIR) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	fi

demo: $(STAMP) fashion-mnist
	$(VENV)/bin/horkd demo

# The accuracy study behind docs/RESULTS.md. Every recorded run (docs/results/runs) is reused, so
# with all of them recorded this rebuilds the page in minutes; otherwise it trains what is missing
# (hours on a 2-core CPU; rerunning continues where it stopped). One thread per run keeps the
# numbers identical to the records'.
results: $(STAMP) fashion-mnist
	$(VENV)/bin/horkd study configs/study/fashion_mnist.yaml --doc docs/RESULTS.md --threads 1

bench: $(STAMP)
	$(PY) benchmarks/losses.py

# The API reference (docs/api) from the docstrings, into docs/api/_build/html. The docs extra is
# installed once, and again when pyproject.toml changes. Strict: any warning, and any reference
# to a horkd name that is not documented (-n), fails the build; -E rereads every page each time.
api: $(STAMP)
	test $(VENV)/.horkd-docs-installed -nt pyproject.toml || \
		{ $(PY) -m pip install -q -e '.[docs]' && touch $(VENV)/.horkd-docs-installed; }
	$(PY) -m sphinx -E -W --keep-going -n -q -b html -d docs/api/_build/doctrees \
		docs/api docs/api/_build/html

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
