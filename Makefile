# Thin wrappers; dvc.yaml owns the pipeline graph and params.yaml the settings.
VENV   ?= .venv
PY     := $(VENV)/bin/python
DVC    := $(VENV)/bin/dvc
PYTEST := $(PY) -m pytest
# The stages run as `python -m stages.<name>` (dvc.yaml): every target finds the project's environment
# first on PATH, so `make repro` works from a plain shell, with or without an activated venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
# Where torch==2.13.0 comes from. Empty: PyPI, which on Linux x86-64 is the CUDA build (several GB of
# NVIDIA libraries, also on a machine without a GPU). For the small CPU-only build:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup test test-integration test-slow repro convert demo sample clean-venv

setup: $(VENV)/.installed  ## create .venv and install everything the pipeline and tests need

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned (an installed 2.13.0, e.g. a CUDA or CPU build you chose, is kept)
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[convert,dev]"
	touch $@

# Test tiers (tests/tiers.py; markers in pyproject.toml). An unmarked test that runs dvc, make, a training or an
# export fails in the fast tier, naming the marker to add.
test: setup  ## fast tier: pure, unit and property tests (under 3 minutes on 2 cores)
	$(PYTEST) -q

test-integration: setup  ## integration tier: the pipeline through dvc and make, tiny trainings, exports (tiny models)
	$(PYTEST) -q -m integration

test-slow: setup  ## slow tier: the real 270M and every bench target
	$(PYTEST) -q -m slow

repro: setup  ## run the pipeline as configured in params.yaml (hub by default)
	$(DVC) repro

# DEMO_ARGS: more `--set KEY=VALUE` overrides after the demo's recipe (the tests run it on the tiny model)
DEMO_ARGS ?=
demo: setup  ## every stage offline on the real 270M, as a DVC experiment (17 min on 2 cores); prints a table
	$(PY) -m commands.demo $(DEMO_ARGS)

convert: setup  ## the mobile artifact: models/litertlm/*.litertlm
	$(DVC) repro convert_litertlm

# Benchmarks (bench/RESULTS.md has the measured figures). They read models/base and data/formatted (the
# paths dvc.yaml gives; `dvc repro format` makes them, offline from the demo's sources) and run from the
# repository root; BENCH_ARGS adds options (e.g. BENCH_ARGS="--max-steps 2" for a quick check).
# On a GPU, `make bench-gpu` needs neither.
BENCH_ARGS ?=
.PHONY: bench bench-train bench-eval bench-gpu bench-accuracy bench-quant
bench: bench-train bench-eval  ## train and eval speed: the notebook's recipe vs ours, side by side

bench-train: setup  ## train tokens/s: the notebook's recipe vs our default (and each change alone), alternating runs
	$(PY) bench/train_bench.py --grad-accum 2 --steps 1 --warmup 1 --rounds 2 $(BENCH_ARGS)

bench-eval: setup  ## eval examples/s: the notebook's per-prompt pipeline vs our batched generation
	$(PY) bench/eval_bench.py --examples 32 $(BENCH_ARGS)

bench-gpu: setup  ## the GPU benchmark: random-init FunctionGemma 270M, ~650-token rows, notebook vs ours (bf16)
	$(PY) bench/train_bench.py --synthetic --steps 5 --warmup 2 --rounds 2 $(BENCH_ARGS)

SEEDS ?= 3
bench-accuracy: setup  ## the accuracy guard: notebook vs our recipe, same hyperparameters, SEEDS runs each (default 3), held-out exact match
	$(PY) bench/recipe_accuracy.py --eval-rows 150 --seeds $(SEEDS) $(BENCH_ARGS)

bench-quant: setup  ## the phone bundle per quantization recipe: size, speed, exact match (needs models/finetuned, data/eval)
	$(PY) bench/quant_bench.py $(BENCH_ARGS)

# Tuning: a grid of train.* experiments in DVC's queue, judged on a validation slice of the train split.
GRID ?= bench/sweep_demo.yaml
ONLY ?=
.PHONY: sweep
sweep: setup  ## queue and run the experiments of GRID (default: the demo's sweep; ONLY=a,b for some), then print their table
	$(PY) -m commands.sweep --grid "$(GRID)" $(if $(ONLY),--only "$(ONLY)")

STEPS ?= 300
CHECKPOINTS ?= 100,200
.PHONY: learning-curve
learning-curve: setup  ## validation exact match as training goes on: one STEPS-step run of the demo recipe, judged at CHECKPOINTS and the end
	$(PY) bench/learning_curve.py --max-steps $(STEPS) --checkpoints "$(CHECKPOINTS)" $(BENCH_ARGS)

sample:  ## regenerate the committed synthetic sample (deterministic)
	$(PY) data/sample/generate.py

clean-venv:  ## delete .venv (make setup builds it again)
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

# Reading the experiments: one row each in 80 columns (commands/experiments_table.py; its docstring has the
# raw `dvc exp show` command that gives a readable markdown table).
.PHONY: experiments help
experiments: setup  ## one row per experiment in 80 columns: exact match and interval, the bundle's, train minutes, changed params: make experiments [ALL=1] [SORT=exact|app|minutes] [MD=1]
	@$(PY) -m commands.experiments_table $(if $(ALL),--all) $(if $(SORT),--sort "$(SORT)") $(if $(MD),--md)

ifneq ($(filter apply,$(MAKECMDGOALS)),)
ifeq ($(EXP),)
$(error name the experiment to apply: make apply EXP=name (make experiments lists them))
endif
endif
.PHONY: apply
apply: setup  ## bring an experiment into the workspace (as dvc exp apply, also one that ran only some stages, as a sweep's): make apply EXP=name
	@$(PY) -m commands.apply "$(EXP)"

# A bare `make` lists the targets (`make setup` is the install, as the README says).
.DEFAULT_GOAL := help
help:  ## list the targets and what each does (also what a bare `make` prints)
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z_-]+:.*## / { name[++n] = $$1; text[n] = $$2; if (length($$1) > w) w = length($$1) } \
	END { indent = sprintf("%" (w + 3) "s", ""); \
		for (t = 1; t <= n; t++) { \
			line = sprintf("  %-" w "s", name[t]); words = split(text[t], word, " "); \
			for (i = 1; i <= words; i++) { \
				if (i > 1 && length(line) + 1 + length(word[i]) > 80) { print line; line = indent word[i] } \
				else line = line " " word[i] } \
			print line } }' $(MAKEFILE_LIST)
