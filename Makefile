# The README's two commands: `make demo` (the whole flow) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every plugin distribution in the tree, installed editable beside the core.
PLUGINS := $(patsubst %/setup.cfg,%,$(wildcard goalhub_*/setup.cfg plugins/*/setup.cfg))
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml $(foreach p,$(PLUGINS),$(p)/setup.cfg)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "goalhub needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]' $(foreach p,$(PLUGINS),-e ./$(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m goalhub.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .goalhub .pytest_cache
