# mailsync: the two commands a newcomer needs are `make demo` and `make test`.
# Both create .venv with the pinned requirements themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1
# plugins/ holds the product package `mailsync` (Airflow puts it on sys.path; so do we).
export PYTHONPATH := $(CURDIR)/plugins:$(CURDIR)

.PHONY: demo test lint browser venv lock bench soak sandbox clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

## Run the main job (crm_to_esp_contacts) on the embedded default: SQLite metadata DB,
## LocalExecutor, local sandbox. DEMO_ONCE=1 exits after the run instead of keeping the UI up.
demo: venv
	$(PY) -m devtools.demo

## The whole test suite (lint first); this is what CI runs.
# Two workers, a test file each at a time (its module fixtures stay in one process): the tests
# wait on schedulers and vendor latency about half the time, so two share two cores (issue 22:
# 1,370 s on one, 932 s on two, on a machine of cpu_reference_s 0.1).
test: lint browser
	$(PY) -m pytest -n 2 --dist loadfile

## Debian's Chromium for the report-rendering test (Playwright drives it; no browser download).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "chromium not installed (needs root): the browser test will skip"

lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mailsync.mapping check include/mappings

## Benchmarks (not part of `make test`): every benchmark at BENCH_SIZE contacts with the vendors'
## limiters on, then bench/results/RESULTS.md with tables and plots. BENCH_SIZE=1000000 is the full
## run; BENCH_ARGS=--no-limits gives machine-only figures. Installs requirements-bench.txt first.
BENCH_SIZE ?= 20000
BENCH_ARGS ?=
bench: venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	$(PY) -m bench --size $(BENCH_SIZE) $(BENCH_ARGS)

## Reliability soak (not part of `make test`): NIGHTS generated nights with random faults, every
## DAG each night, end state compared with the mappings; totals in bench/results/RELIABILITY.md.
NIGHTS ?= 12
SEED ?= 1
soak: venv
	-MAILSYNC_SOAK=1 MAILSYNC_RELIABILITY_MD=$(CURDIR)/bench/results/RELIABILITY.md \
	  $(PY) -m pytest tests/reliability tests/e2e -m soak -p no:cacheprovider
	$(PY) -m tests.reliability.soak --nights $(NIGHTS) --seed $(SEED)

## Start the sandbox vendors in the foreground (Ctrl-C stops them).
sandbox: venv
	$(PY) -m sandbox serve --data-dir .sandbox

## Re-pin the full dependency set into constraints.txt from a fresh environment.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	sed '/^-c /d' requirements.txt > .lockenv/req.txt
	.lockenv/bin/pip install --quiet --disable-pip-version-check -r .lockenv/req.txt
	.lockenv/bin/pip freeze --exclude-editable > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf .airflow .staging .sandbox .pytest_cache
