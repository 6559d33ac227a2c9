# Two commands on a fresh machine: `make app` and `make test`.
# The virtualenv lives in the Graft cache, keyed by the hash of requirements.txt, so CI and
# later checkouts reuse it; a changed requirements.txt makes a new one.
PYTHON ?= python3
GRAFT_HOME ?= $(HOME)/.cache/graft
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-12)
VENV ?= $(GRAFT_HOME)/venv-$(REQ_HASH)
PY := $(VENV)/bin/python
PORT ?= 8501
SAMPLE := $(GRAFT_HOME)/samples/elpv

.PHONY: app share test venv samples browser bench clean-venvs

venv: $(VENV)/.installed

# The venv path carries the requirements hash, so an existing venv is always the right one.
$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

samples: venv
	$(PY) -m core samples elpv $(SAMPLE)

app: venv samples
	GRAFT_SAMPLE=$(SAMPLE) $(PY) serve.py --server.headless true --server.address 127.0.0.1 --server.port $(PORT)

# Sharing: serves on the network with a view link (and its QR code) for the room and an owner link
# for you; see README "Sharing the dashboard". Keys: GRAFT_VIEW_KEY / GRAFT_OWNER_KEY, else new ones.
share: venv samples
	GRAFT_SAMPLE=$(SAMPLE) $(PY) -m core share --port $(PORT)

# The browser tests drive Debian's Chromium (no browser download is possible here). Installed when
# missing and we are root; otherwise say how, and those tests are skipped (they fail under CI=true).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium for the browser tests (apt-get)…"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else echo "Chromium is missing: run 'sudo apt-get install chromium' for the browser tests."; fi; }

test: venv browser
	$(PY) -m pytest -q tests

bench: venv
	$(PY) bench/time_to_accuracy.py

clean-venvs:
	rm -rf $(GRAFT_HOME)/venv-*
