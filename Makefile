# kit: `make help` lists the targets. Options: CONFIG=configs/x.yaml SET="data.image_size=160 ..."
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/dogs-vs-cats-redux.yaml
SET ?=
FROM ?=
KIT := $(PY) -m kit
OPTS = --config $(CONFIG) $(if $(strip $(SET)),--set "$(SET)")

$(VENV)/.installed: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12) and "kit needs Python 3.11 or 3.12 (found " + sys.version.split()[0] + "): set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	@touch $@

.PHONY: help venv venv-jax demo test test-jax download data train submit upload submissions predict export lr-find report bench clean-demo \
	kernel-push kernel-status kernel-output plan

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  options: CONFIG=$(CONFIG) SET=\"section.key=value ...\" FROM=path/to/competition.zip"

venv: $(VENV)/.installed ## create .venv and install requirements.txt (other targets do it when needed)

demo: venv ## the whole chain offline on a generated synthetic competition (configs/demo.yaml)
	$(KIT) demo --config configs/demo.yaml $(if $(strip $(SET)),--set "$(SET)")

WORKERS ?= 2
test: venv ## run the test suite on WORKERS=2 processes (the JAX backend's tests: make test-jax)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m "not jax"

$(VENV)/.jax-installed: requirements-jax.txt $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -r requirements-jax.txt
	@touch $@

venv-jax: $(VENV)/.jax-installed ## add JAX (CPU) to .venv, for KERAS_BACKEND=jax (Kaggle's TPU image has its own)

# Backend-neutral tests run again with KERAS_BACKEND=jax: the layer-group optimizer and SGDR, BatchNorm kept in
# inference mode while fine-tuning, the callbacks, the head on features, resume after a kill.
JAX_AGAIN := tests/model/test_optim.py tests/train/test_callbacks.py tests/train/test_head.py tests/train/test_resume.py \
	tests/model/test_backbones.py::test_finetuning_fit_keeps_batchnorm_statistics_only_when_frozen
test-jax: venv-jax ## the JAX backend's tests: demo chain, DataParallel on 2 CPU devices, across backends, JAX_AGAIN
	KIT_NEED_JAX=1 $(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m jax
	KERAS_BACKEND=jax $(PY) -m pytest -q -n $(WORKERS) --dist loadfile -m "not jax" $(JAX_AGAIN)

download: venv ## fetch + extract + verify the competition (Kaggle API; FROM=zip-or-folder for offline)
	$(KIT) download $(OPTS) $(if $(FROM),--from "$(FROM)")

data: venv ## index and check every image, write the seeded train/validation split
	$(KIT) data $(OPTS)

train: venv ## fine-tune on the competition (index built if needed); best epoch kept in runs/<run>/
	$(KIT) train $(OPTS)

submit: venv ## predict the test set with TTA, check, write submissions/<run>-<time>.csv + submission.csv
	$(KIT) submit $(OPTS)

upload: venv ## send submission.csv to Kaggle (message: run, validation log loss, commit); ARGS="--wait" for its score
	$(KIT) upload $(OPTS) $(ARGS)

submissions: venv ## the ledger with Kaggle's scores, refreshed, best first; submissions/index.html redrawn
	$(KIT) submissions $(OPTS)

predict: venv ## top classes of single images: IMAGES="a.jpg dir/" [RUN=name] [ARGS="--tta --csv out.csv"]
	$(KIT) predict $(OPTS) $(IMAGES) $(if $(RUN),--run "$(RUN)") $(ARGS)

export: venv ## the trained model as .keras, SavedModel, TFLite (raw RGB in, labels beside), checked
	$(KIT) export $(OPTS) $(if $(RUN),--run "$(RUN)") $(if $(OUT),--out "$(OUT)")

plan: venv ## each step's images and estimated time on this machine (a short probe), and the disk it needs
	$(KIT) plan $(OPTS) $(ARGS)

lr-find: venv ## learning-rate range test: loss vs rate (PNG) and a suggested rate (lr_find.stage=head|finetune)
	$(KIT) lr-find $(OPTS) $(if $(RUN),--run "$(RUN)")

report: venv ## plots and report.html for a run (RUN=name, default the newest)
	$(KIT) report $(OPTS) $(if $(RUN),--run "$(RUN)")

kernel-push: venv ## run this config in a Kaggle kernel, T4 x2 (ARGS="--cpu" or "--dry-run": bundle only)
	$(KIT) kernel push $(OPTS) $(ARGS)

kernel-status: venv ## poll the pushed kernel until it ends; on ERROR its message and log tail (ARGS=--no-wait)
	$(KIT) kernel status $(OPTS) $(ARGS)

kernel-output: venv ## bring the kernel's run and submission.csv back, checked, ready for make upload
	$(KIT) kernel output $(OPTS) $(ARGS)

bench: venv ## benchmarks side by side into BENCHMARKS.md (QUICK=1: a smoke run; not part of make test)
	$(PY) bench/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

clean-demo: ## remove everything make demo wrote (demo/)
	rm -rf demo
