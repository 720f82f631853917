# The two commands a new user types: `make run` and `make test`. Both set up .venv first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export FER_HOME ?= $(CURDIR)/.fer
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1

.PHONY: setup run test test-fast test-containers images bench compile clean help

help:
	@echo "make run    set up, run the whole pipeline locally, end with a served prediction"
	@echo "make test   set up and run the test suite"
	@echo "make test-fast  the code and data tiers only (under 3 minutes)"
	@echo "make bench  set up and run the benchmarks in bench/"
	@echo "make images build the component and TorchServe images (podman, installed when no Docker engine runs)"
	@echo "make test-containers  make images, then the container test tier"

setup: $(STAMP)

# torch/torchvision first (local wheels), then the project with every pin from pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[dev,cluster]"
	$(BIN)/python -m pip check
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fer demo

test: $(STAMP)
	$(BIN)/python -m pytest -q tests components -m "not container"

# The images from docker/, with podman when no Docker engine answers (installed and configured here).
images: $(STAMP)
	@docker info >/dev/null 2>&1 || docker/scripts/podman-setup.sh
	$(BIN)/fer images build

# the container tier (tests/containers/): the built images run as the manifests and the pipeline run them
test-containers: images
	$(BIN)/python -m pytest -q tests/containers -m container

# the code and data tiers (conftest.py), without the tests marked slow: under 3 minutes on 2 cores
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests components -m "(code or data) and not slow"

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

compile: $(STAMP)
	$(BIN)/fer pipeline compile --out pipeline.yaml

clean:
	rm -rf $(FER_HOME) pipeline.yaml
