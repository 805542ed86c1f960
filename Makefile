# The README's two commands: `make demo` (the whole flow) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every plugin distribution in the tree, installed editable beside the core.
PLUGINS := $(patsubst %/setup.cfg,%,$(wildcard goalhub_*/setup.cfg plugins/*/setup.cfg))
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench soak browser clean

$(STAMP): setup.cfg pyproject.toml $(foreach p,$(PLUGINS),$(p)/setup.cfg)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "goalhub needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' $(foreach p,$(PLUGINS),-e ./$(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m goalhub.demo

test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# Debian's chromium for the dashboard's browser test (it skips, saying why, without it).
browser:
	@sh scripts/ensure-chromium.sh

# The chaos soak (issue 12): not part of `make test`; finishes by itself in under 10 minutes.
soak: $(STAMP)
	$(BIN)/python -m pytest soak/test_soak.py -p no:cacheprovider -s -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .goalhub .pytest_cache .artifacts
