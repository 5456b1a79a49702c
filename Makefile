# ModelOps: common tasks. `make help` lists them.
PYTHON ?= python3
PYTEST_ARGS ?=
export PYTHONUNBUFFERED := 1

.PHONY: help install lint typecheck imports crds crds-check validate test test-unit test-runtime \
	test-cluster test-e2e test-docs quickstart bench clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

install:  ## install the package with every extra (editable)
	$(PYTHON) -m pip install -e ".[all]"

lint:  ## ruff on everything Python
	ruff check operator trainer_image tests bench tools

typecheck:  ## mypy --strict on the modelops package
	mypy

imports:  ## layer contracts (import-linter)
	lint-imports

crds:  ## regenerate crds/ and the chart's copy from the models
	$(PYTHON) -m modelops crds

crds-check:  ## fail when crds/ or the chart's copy is stale
	$(PYTHON) -m modelops crds --check

validate:  ## validate every example manifest
	$(PYTHON) -m modelops validate examples

# The test command: quality gates, then every test tier (unit, runtime, cluster, e2e, docs);
# the cluster and e2e tiers run alongside the others (tools/run-tests.sh).
test: lint typecheck imports crds-check  ## quality gates and the whole test suite
	PYTHON=$(PYTHON) tools/run-tests.sh $(PYTEST_ARGS)

test-unit:  ## pure unit tests only
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

test-runtime:  ## real Ray, torch and HTTP
	$(PYTHON) -m pytest tests/runtime $(PYTEST_ARGS)

test-cluster:  ## against the real control plane
	$(PYTHON) -m pytest tests/cluster $(PYTEST_ARGS)

test-e2e:  ## end to end
	$(PYTHON) -m pytest tests/e2e $(PYTEST_ARGS)

test-docs:  ## the documentation's shell blocks, and every CLI flag used by a test
	$(PYTHON) -m pytest tests/docs $(PYTEST_ARGS)

quickstart:  ## install, then run the whole lifecycle locally (examples/quickstart)
	$(PYTHON) -m pip install -q -e ".[operator,runtime]"
	$(PYTHON) examples/quickstart/quickstart.py --corrupt

bench:  ## every benchmark under bench/
	for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

clean:  ## remove caches and local state
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis .state

-include tests/controlplane/cluster.mk
-include mk/*.mk
