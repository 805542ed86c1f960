# The README's two commands: `make demo` (the whole flow) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# What `make install` and tox install: goalhub with its test and bench tools, every plugin and
# the example app, all editable (one list; tests/test_install_list.py checks it is complete).
REQUIREMENTS := requirements-dev.txt
STAMP := $(VENV)/.installed
# pytest-xdist processes for `make test` (the end-to-end tests partly wait on their processes).
TEST_WORKERS ?= 4
# Bytecode caches are written, whatever the environment says: without them every process the
# suite starts compiles its imports again, and every pytest process rewrites every test module.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test lint typecheck bench soak screenshots chromium promtool constraints clean

# The tree's own Python sources (editable installs: no installer compiles them).
SOURCES := goalhub goalhub_exclusive goalhub_show plugins examples tests

# uv (a faster pip, itself installed with pip) when it can be had, else pip alone. Both compile
# what they install to bytecode (pip does by default; uv when told): where PYTHONDONTWRITEBYTECODE
# is set, nothing else would, and every process would compile its imports again (~1 s of CPU).
$(STAMP): $(REQUIREMENTS) constraints.txt setup.cfg pyproject.toml $(wildcard goalhub_*/setup.cfg plugins/*/setup.cfg examples/demo/setup.cfg)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "goalhub needs Python 3.11+")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --quiet --disable-pip-version-check uv \
	  && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -r $(REQUIREMENTS) ) \
	|| ( $(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel \
	  && $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation -r $(REQUIREMENTS) )
	# The otel extra, into .venv/otel (outside the venv's path): for the trace tests alone.
	$(BIN)/python scripts/install_otel.py
	$(BIN)/python -m compileall -q $(SOURCES)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m goalhub_demo

test: $(STAMP) chromium promtool
	$(BIN)/python -m compileall -q $(SOURCES)  # what changed since the install (fast otherwise)
	$(BIN)/ruff check .
	# The import contract (.importlinter): plugins import goalhub, never goalhub.* submodules.
	PYTHONPATH=examples/goalhub-welcome $(BIN)/lint-imports --no-cache
	# In parallel (pytest-xdist: each worker its own embedded Redis, each test its own home and
	# ports), with mypy beside them (its verdict printed after theirs), then the serial tests
	# (they hold a deadline of seconds), alone. Both pytest runs print the 15 slowest tests.
	$(BIN)/mypy > $(VENV)/mypy.out 2>&1 & typing=$$!; \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m "not serial"; tests=$$?; \
	wait $$typing; typed=$$?; echo "mypy: $$(cat $(VENV)/mypy.out)"; \
	test $$tests -eq 0 && test $$typed -eq 0
	$(BIN)/python -m pytest -m serial

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

# constraints.txt afresh: the newest versions within setup.cfg's ranges (needs the registry); then
# `make test` on them, and commit both.
constraints: $(STAMP)
	$(BIN)/python scripts/update_constraints.py
	$(MAKE) install

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .goalhub .pytest_cache .artifacts
