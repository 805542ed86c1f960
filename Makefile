# The README's two commands: `make demo` (the whole flow) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every plugin distribution in the tree, installed editable beside the core.
PLUGINS := $(patsubst %/setup.cfg,%,$(wildcard goalhub_*/setup.cfg plugins/*/setup.cfg))
# The platform's flows outside the core: `make demo` and the seed world of the plugins' tests.
DEMO := examples/demo
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck bench soak screenshots chromium promtool clean

$(STAMP): setup.cfg pyproject.toml $(foreach p,$(PLUGINS) $(DEMO),$(p)/setup.cfg)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "goalhub needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]' $(foreach p,$(PLUGINS) $(DEMO),-e ./$(p))
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m goalhub_demo

test: $(STAMP) chromium promtool
	$(BIN)/ruff check .
	# The import contract (.importlinter): plugins import goalhub, never goalhub.* submodules.
	PYTHONPATH=examples/goalhub-welcome $(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Debian's chromium, headless, for the dashboard's browser test and screenshots (the test
# skips, saying why, when it cannot be installed).
chromium:
	@sh scripts/ensure-chromium.sh

# Debian's prometheus package, for `promtool check rules` on deploy/prometheus/ in the suite
# (tests/test_deploy.py skips those checks, saying why, when it cannot be installed).
promtool:
	@sh scripts/ensure-promtool.sh

# The chaos soak (issue 12): not part of `make test`; finishes by itself in under 10 minutes.
soak: $(STAMP)
	$(BIN)/python -m pytest soak/test_soak.py -p no:cacheprovider -s -q

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Screenshots of the dashboard in a real browser, into screenshots/ (see scripts/screenshots.py).
screenshots: $(STAMP) chromium
	$(BIN)/python scripts/screenshots.py screenshots

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .goalhub .pytest_cache .artifacts
