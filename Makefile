# Two commands do everything on a fresh Debian/Ubuntu machine:  make demo   and   make test
VENV   ?= .venv
# The CPU build of torch that this project is tested with; on your own machine: make demo TORCH=torch
TORCH  ?= torch==2.13.0
PYTHON ?= python3
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test lint setup data browser clean

demo: setup data
	$(VENV)/bin/peftlab run

test: setup data browser
	$(VENV)/bin/pytest -q

lint: setup  # CI runs it before the tests: a lint or format finding fails the build
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[test]"
	touch $@

data:
	@if [ ! -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "no apt-get: get Fashion-MNIST's IDX files and set PEFTLAB_FMNIST_DIR, or pass --dataset"; fi; \
	fi

browser:  # headless Chromium renders report.html in the tests (skipped without it)
	@if ! command -v chromium >/dev/null; then \
	  if command -v apt-get >/dev/null; then \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; \
	  else echo "no apt-get: install Chromium to run the report rendering test (it is skipped without it)"; fi; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
