# terratiler: `make serve` runs the service on the demo catalog, `make test` runs the tests.
# Both set everything up on a fresh machine (Debian packages, .venv, the demo data).

PYTHON ?= python3
LINT_PATHS := $(wildcard app tests bench)
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= data/demo
HOST ?= 127.0.0.1
PORT ?= 8000
# Debian packages the tests need (installed only when missing; needs root, as on CI).
PG_MAJOR := $(shell ls /etc/postgresql 2>/dev/null | sort -n | tail -n 1)
APT_TEST_PACKAGES := $(if $(PG_MAJOR),postgresql-$(PG_MAJOR)-postgis-3) chromium chromium-driver

.PHONY: serve test venv apt-test demo lint format bench clean fuzz

$(BIN)/terratiler: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/terratiler

$(DEMO)/collection.json: | $(BIN)/terratiler
	$(BIN)/terratiler demo $(DEMO)

demo: $(DEMO)/collection.json

serve: venv demo
	TERRATILER_CATALOG=$(DEMO) $(BIN)/terratiler serve --host $(HOST) --port $(PORT)

apt-test:
	@missing=""; for p in $(APT_TEST_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

test: venv apt-test
	$(BIN)/pytest -q $(PYTEST_ARGS)

# schemathesis over the whole OpenAPI document, against the service on the demo catalog:
# checks not_a_server_error and status_code_conformance, FUZZ_EXAMPLES per operation and
# phase, FUZZ_TIME seconds at most (tests/harness/fuzz.py, tests/schemathesis.toml).
FUZZ_EXAMPLES ?= 5
FUZZ_TIME ?= 300
fuzz: venv demo
	$(BIN)/python -m tests.harness.fuzz --catalog $(DEMO) --max-examples $(FUZZ_EXAMPLES) --max-time $(FUZZ_TIME)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: venv
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .ruff_cache
