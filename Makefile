# vicflow: `make demo` runs the full-stack blueprint on the local test bed, `make test` runs the tests.
# Both install what they need first (apt packages, the Python environment, the simulator, dockerd, images).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := golang-go golang-github-vmware-govmomi-dev docker.io docker-compose debootstrap docker-registry socat iptables chromium chromium-driver postgresql iproute2 redis-server haproxy prometheus

.PHONY: setup apt venv testbed test check fast-tier demo demo-down lint bench fuzz stop clean

setup: testbed

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "[setup] apt-get install$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@echo "[setup] Python environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

testbed: apt venv
	@$(PY) -m tests.testbed all

# `make test`: every test, on WORKERS pytest-xdist workers, each a host of its own (network namespace, dockerd):
# tests/README.md. `make check`: lint and the fast tier (no test bed, no root, no apt; after `make venv` only).
WORKERS ?= 4
test: testbed
	$(PY) -m pytest -n $(WORKERS)

# lint and the fast tier at once: mypy's cold start and the tests' waits on their Prefect servers overlap
check: venv
	@$(MAKE) --no-print-directory -j2 --output-sync=line lint fast-tier

fast-tier: venv
	VICFLOW_FUZZ=quick VICFLOW_TESTBED_HOSTS=0 $(PY) -m pytest -n 2 -m "not testbed"

demo: testbed
	@$(PY) -m tests.demo

demo-down: venv
	@$(PY) -m vicflow.flows.cli.main run tests/data/demo-down.yaml

TYPECHECK := .vicflow/typecheck

lint: venv  # style and bugs (ruff), its formatting, the import layering and cycles (import-linter), then types (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	@# mypy reads the sources as the package they install as (vicflow.flows is flows/): a tree of links
	@mkdir -p $(TYPECHECK)/vicflow && touch $(TYPECHECK)/vicflow/__init__.py
	@for p in flows plugins blueprints; do ln -sfn ../../../$$p $(TYPECHECK)/vicflow/$$p; done
	cd $(TYPECHECK) && ../../$(VENV)/bin/mypy --config-file ../../pyproject.toml -p vicflow.flows -p vicflow.plugins

fuzz: venv  # the generated hostile-input suites at their full count (10,000 cases per loader and per class of issue 27)
	VICFLOW_FUZZ=full $(PY) -m pytest -q -s tests/reliability/test_hostile_input.py tests/reliability/test_hostile_classes.py

bench: testbed
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

stop:
	@$(PY) -m tests.testbed stop

clean: stop
	rm -rf $(VENV) *.egg-info
