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

.PHONY: app test venv samples bench clean-venvs

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
	GRAFT_SAMPLE=$(SAMPLE) $(PY) -m streamlit run app.py --server.headless true --server.address 127.0.0.1 --server.port $(PORT)

test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) bench/time_to_accuracy.py

clean-venvs:
	rm -rf $(GRAFT_HOME)/venv-*
