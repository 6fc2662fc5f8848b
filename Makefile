# transferlab: every target creates the Python environment first if it is missing.
# The environment lives outside the clone, keyed on uv.lock, so clones and CI runs reuse it.
SHELL := /bin/bash
PYTHON ?= python3.11
ENV_ROOT ?= $(or $(TRANSFERLAB_ENV_ROOT),$(HOME)/.cache/transferlab/envs)
LOCK_HASH := $(shell sha256sum uv.lock | cut -c1-16)
ENV := $(ENV_ROOT)/$(LOCK_HASH)
BIN := $(ENV)/bin
PROJECT_STAMP := $(ENV)/.installed-$(shell printf '%s' "$(CURDIR)" | sha256sum | cut -c1-8)-$(shell sha256sum pyproject.toml | cut -c1-8)
ARGS ?=
PY_DIRS := $(wildcard src tests benchmarks)

.PHONY: help env train test test-all lint format sweep tensorboard lock clean-env

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# uv.lock is the record of pins; pip installs them (pip finds the torch wheels cached on this kind of
# machine, uv would download them). --no-deps: the exported list is already the complete closure.
# No prerequisite on uv.lock: the folder name is the lock's hash, and a fresh clone's newer file times
# must not trigger a rebuild.
$(ENV)/.complete:
	@echo "Creating the environment in $(ENV) (once per uv.lock)"
	rm -rf "$(ENV)"
	$(PYTHON) -m venv "$(ENV)"
	"$(BIN)/pip" install --quiet --upgrade "pip>=24" "setuptools>=77" "$$(grep -A1 '^name = "uv"$$' uv.lock | sed -n 's/^version = "\(.*\)"/uv==\1/p')"
	"$(BIN)/uv" export --frozen --quiet --no-hashes --no-emit-project --all-extras --format requirements-txt -o "$(ENV)/requirements.txt"
	"$(BIN)/pip" install --quiet --no-deps -r "$(ENV)/requirements.txt"
	touch "$@"

env: $(ENV)/.complete  ## create the environment if missing and install this clone into it
	@# (Re)install when the environment points at another clone or pyproject.toml changed (console scripts).
	@"$(BIN)/python" -c "import pathlib, sys, transferlab; \
	  sys.exit(pathlib.Path(transferlab.__file__).resolve().parents[1] != pathlib.Path('src').resolve())" \
	  2>/dev/null && test -f "$(PROJECT_STAMP)" || { \
	  "$(BIN)/pip" install --quiet --no-deps --no-build-isolation -e . && touch "$(PROJECT_STAMP)"; }

train: env  ## train the default experiment (pretrained EfficientNet-Lite0 on Animal-MNIST silhouettes)
	"$(BIN)/transferlab-train" $(ARGS)

test: env  ## fast test suite
	"$(BIN)/python" -m pytest $(ARGS)

test-all: env  ## every test, slow ones included
	"$(BIN)/python" -m pytest -m "" $(ARGS)

lint: env  ## ruff check + format check
	"$(BIN)/ruff" check $(PY_DIRS)
	"$(BIN)/ruff" format --check $(PY_DIRS)

format: env  ## apply ruff fixes and formatting
	"$(BIN)/ruff" check --fix $(PY_DIRS)
	"$(BIN)/ruff" format $(PY_DIRS)

sweep: env  ## Optuna search (conf/hparams_search/optuna.yaml); ARGS="hydra.sweeper.n_trials=50 ..."
	"$(BIN)/transferlab-train" hparams_search=optuna $(ARGS)

# every run and multirun job of the training task lives under logs/train: one TensorBoard compares them
TB_LOGDIR ?= logs/train
tensorboard: env  ## open TensorBoard on logs/train (TB_LOGDIR=... elsewhere; ARGS="--port 6007")
	"$(BIN)/tensorboard" --logdir $(TB_LOGDIR) $(ARGS)

lock: env  ## re-resolve uv.lock after editing dependencies in pyproject.toml
	"$(BIN)/uv" lock

clean-env:  ## delete this lock's environment
	rm -rf "$(ENV)"
