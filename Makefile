# Thin wrappers; dvc.yaml owns the pipeline graph and params.yaml the settings.
VENV   ?= .venv
PY     := $(VENV)/bin/python
DVC    := $(VENV)/bin/dvc
PYTEST := $(PY) -m pytest

.PHONY: setup test test-slow repro convert demo sample clean-venv

setup: $(VENV)/.installed  ## create .venv and install everything the pipeline and tests need

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: this takes the CPU build on a CPU machine (see README for CUDA)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[convert,dev]"
	touch $@

test: setup  ## fast suite (unit, property, pipeline on tiny models)
	$(PYTEST) -q

test-slow: setup  ## slow suite on the real 270M (minutes)
	$(PYTEST) -q -m slow

repro: setup  ## run the pipeline as configured in params.yaml (hub by default)
	$(DVC) repro

demo: setup  ## every stage offline on the real 270M, as a DVC experiment (~20 min on 2 cores); prints a table
	$(PY) -m commands.demo

convert: setup  ## the mobile artifact: models/litertlm/*.litertlm
	$(DVC) repro convert_litertlm

# Benchmarks (bench/RESULTS.md has the measured figures). They need data/formatted and models/base
# (`dvc repro format`; offline: the demo's sources). On a GPU, `make bench-gpu` needs neither.
.PHONY: bench bench-train bench-eval bench-gpu bench-accuracy
bench: bench-train bench-eval  ## train and eval speed: the notebook's recipe vs ours, side by side

bench-train: setup  ## train tokens/s: the notebook's recipe vs our default (and each change alone), alternating runs
	$(PY) bench/train_bench.py --grad-accum 2 --steps 1 --warmup 1 --rounds 2

bench-eval: setup  ## eval examples/s: the notebook's per-prompt pipeline vs our batched generation
	$(PY) bench/eval_bench.py --examples 32

bench-gpu: setup  ## the GPU benchmark: random-init FunctionGemma 270M, ~650-token rows, notebook vs ours (bf16)
	$(PY) bench/train_bench.py --synthetic --steps 5 --warmup 2 --rounds 2

SEEDS ?= 3
bench-accuracy: setup  ## the accuracy guard: notebook vs our recipe, same hyperparameters, SEEDS runs each (default 3), held-out exact match
	$(PY) bench/recipe_accuracy.py --eval-rows 150 --seeds $(SEEDS)

sample:  ## regenerate the committed synthetic sample (deterministic)
	$(PY) data/sample/generate.py

clean-venv:
	rm -rf $(VENV)

# Review and sharing. `report` compares two revisions or experiments, row by row (what the PR workflow posts);
# `push` uploads models/finetuned/ (+ the .litertlm if present) with a generated model card.
.PHONY: report push
A ?= main
B ?= workspace

report: setup  ## markdown for review: headline, paired comparison on the eval rows, metrics and params diff: make report [A=rev-or-exp] [B=rev-or-exp]
	@$(PY) -m commands.report --a "$(A)" --b "$(B)"

ifneq ($(filter push,$(MAKECMDGOALS)),)
ifeq ($(REPO),)
$(error name the Hugging Face repo to push to: make push REPO=user/name)
endif
endif
push: setup  ## share the fine-tuned model on the Hugging Face Hub: make push REPO=user/name [PRIVATE=1]
	$(PY) -m commands.push --repo "$(REPO)" $(if $(PRIVATE),--private)
