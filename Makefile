# Two commands on a fresh machine: `make app` and `make test`.
# The virtualenv lives in the Graft cache, keyed by the hash of pyproject.toml's dependency lists, so
# CI and later checkouts reuse it; a changed dependency makes a new one. Graft itself is installed
# editable into it from this checkout (`graft` = `python -m core`).
PYTHON ?= python3
GRAFT_HOME ?= $(HOME)/.cache/graft
REQ_HASH := $(shell sed -n '/^dependencies = \[/,/^]/p;/^scale = \[/,/^]/p;/^dev = \[/,/^]/p' pyproject.toml | sha256sum | cut -c1-12)
HERE_HASH := $(shell pwd | sha256sum | cut -c1-12)
VENV ?= $(GRAFT_HOME)/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
PORT ?= 8501
SAMPLE := $(GRAFT_HOME)/samples/elpv

.PHONY: app share test test-quick lint venv samples browser bench clean-venvs

venv: $(VENV)/.editable-$(HERE_HASH)

# The venv path carries the dependencies' hash, so an existing venv has the right packages.
$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# Several checkouts may share the venv: the editable install points at the one that ran last.
$(VENV)/.editable-$(HERE_HASH): $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.editable-*
	touch $@

samples: venv
	$(VENV)/bin/graft samples elpv $(SAMPLE)

app: venv samples
	GRAFT_SAMPLE=$(SAMPLE) $(PY) serve.py --server.headless true --server.address 127.0.0.1 --server.port $(PORT)

# Sharing: serves on the network with a view link (and its QR code) for the room and an owner link
# for you; see README "Sharing the dashboard". Keys: GRAFT_VIEW_KEY / GRAFT_OWNER_KEY, else new ones.
share: venv samples
	GRAFT_SAMPLE=$(SAMPLE) $(VENV)/bin/graft share --port $(PORT)

# The browser tests drive Debian's Chromium (no browser download is possible here). Installed when
# missing and we are root; otherwise say how, and those tests are skipped (they fail under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium for the browser tests (apt-get)…"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium' for the browser tests."; fi; }

# Everything, as CI runs it: the quick tier, the slow tier and the browser tests, on both cores.
test: venv browser
	$(PY) -m pytest -q -n 2 tests

# The everyday tier: no browser, no training beyond a few seconds (about 3 minutes on 2 cores).
test-quick: venv
	$(PY) -m pytest -q -n 2 -m "not slow and not browser" tests

# The house rules: imports run downwards with no circles (pyproject.toml), and ruff's checks.
lint: venv
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check core pages tests bench app.py serve.py

bench: venv
	$(PY) bench/time_to_accuracy.py

clean-venvs:
	rm -rf $(GRAFT_HOME)/venv-*
