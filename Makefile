# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format model bench

$(STAMP): builder/requirements-cpu.lock builder/setup_cpu_env.sh pyproject.toml
	bash builder/setup_cpu_env.sh $(VENV)
	touch $@

## Prepare the default model (SmolLM2-135M-Instruct) once; later runs reuse the cache.
model: $(STAMP)
	$(PY) -m vllm_worker.default_model

## Start the worker on the default model (or MODEL_NAME) behind a local RunPod endpoint
## on http://127.0.0.1:8000 (HOST and PORT change it).
run: model
	$(PY) -m vllm_worker.local

## Run every test on the real engine with the default model.
test: model
	$(PY) -m pytest -ra $(PYTEST_ARGS)

## Measure the worker against raw vLLM on this machine (about 30 minutes) and write
## docs/benchmark.md and docs/benchmark.png; BENCH_ARGS=--quick checks the pipeline in ~3.
bench: model
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
