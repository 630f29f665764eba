# One front door: `make test` and `make demo` set everything up on a fresh clone.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.horkd-installed
# Pinned to the wheels this project is developed and tested with.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: setup test test-all demo results results-glyphs lint bench fashion-mnist glyphs clean api

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The environment alone (PyTorch, horkd and the test tools in .venv), for a user who wants the
# `horkd` command without waiting for the tests or the demo.
setup: $(STAMP)

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

# The glyphs dataset's fonts: Debian's Latin font packages (over 200 usable faces in over 80
# design groups; clones of one design are left out: no TeX Gyre beside URW, no croscore beside
# Liberation, no FreeFont), then the set rendered once into its cache (minutes, once). Bebas Neue,
# F500 and Ubuntu Title draw their letters alike (every face left out, counted in the manifest),
# but the data digest names every font file read: with them the set is the one the glyph
# study's records were made from, so its page is rebuilt from them rather than trained again.
GLYPH_FONTS := fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius \
	fonts-adf-ikarius fonts-adf-irianis fonts-adf-libris fonts-adf-mekanus fonts-adf-oldania \
	fonts-adf-romande fonts-adf-switzera fonts-adf-tribun fonts-adf-universalis fonts-adf-verana \
	fonts-allerta fonts-anonymous-pro fonts-arapey fonts-averia-gwf fonts-averia-sans-gwf \
	fonts-averia-serif-gwf fonts-b612 fonts-bebas-neue fonts-beteckna fonts-blankenburg \
	fonts-cabin fonts-cabinsketch fonts-cantarell fonts-cardo fonts-century-catalogue \
	fonts-clear-sans fonts-comfortaa fonts-comic-neue fonts-courier-prime fonts-crosextra-caladea \
	fonts-crosextra-carlito fonts-dancingscript fonts-dejavu-core fonts-dejavu-extra \
	fonts-dkg-handwriting fonts-dosis fonts-ebgaramond fonts-engadget fonts-f500 fonts-fanwood \
	fonts-femkeklaver fonts-firacode fonts-go fonts-goudybookletter fonts-hermit fonts-humor-sans \
	fonts-inconsolata fonts-inter fonts-isabella fonts-jetbrains-mono fonts-junction fonts-jura \
	fonts-karla fonts-karmilla fonts-kaushanscript fonts-kristi fonts-lato fonts-league-mono \
	fonts-league-spartan fonts-levien-museum fonts-liberation2 fonts-lindenhill \
	fonts-linuxlibertine fonts-lobster fonts-lobstertwo fonts-manrope fonts-monofur \
	fonts-mononoki fonts-ocr-a fonts-ocr-b fonts-oflb-euterpe fonts-oldstandard fonts-open-sans \
	fonts-opendin fonts-opendyslexic fonts-oxygen fonts-paratype fonts-play fonts-prociono \
	fonts-quattrocento fonts-quicksand fonts-roboto-slab fonts-roboto-unhinted fonts-routed-gothic \
	fonts-rufscript fonts-sil-andika fonts-sil-charis fonts-sil-gentiumplus fonts-sora fonts-stix \
	fonts-tiresias fonts-tuffy fonts-ubuntu-title fonts-urw-base35 fonts-vollkorn \
	fonts-yanone-kaffeesatz

glyphs: $(STAMP)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -q --no-install-recommends $(GLYPH_FONTS) || \
		 (apt-get update -q && apt-get install -y -q --no-install-recommends $(GLYPH_FONTS))); \
	else echo "glyphs: not root or no apt-get: as root, run: apt-get install --no-install-recommends $(GLYPH_FONTS)"; fi
	$(PY) -m horkd.data.glyphs

demo: $(STAMP) fashion-mnist
	$(VENV)/bin/horkd demo

# The accuracy studies behind docs/RESULTS*.md: the exploratory rounds and the confirmatory round
# on Fashion-MNIST (results), the glyphs of real fonts (results-glyphs). Every recorded run
# (docs/results/) is reused, so with all of them recorded this rebuilds the pages in minutes;
# otherwise it trains what is missing (hours on a 2-core CPU; rerunning continues where it
# stopped). One thread per run keeps the numbers identical to the records'.
results: $(STAMP) fashion-mnist
	$(VENV)/bin/horkd study configs/study/fashion_mnist.yaml --doc docs/RESULTS.md --threads 1
	$(VENV)/bin/horkd study configs/study/fashion_mnist_confirm.yaml --doc docs/RESULTS-confirm.md --threads 1

results-glyphs: $(STAMP) glyphs
	$(VENV)/bin/horkd study configs/study/glyphs.yaml --doc docs/RESULTS-glyphs.md --threads 1

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
