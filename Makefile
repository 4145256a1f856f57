# Two commands set everything up on a fresh machine: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format model

$(STAMP): builder/requirements-cpu.lock builder/setup_cpu_env.sh pyproject.toml
	bash builder/setup_cpu_env.sh $(VENV)
	touch $@

## Prepare the default model (SmolLM2-135M-Instruct) once; later runs reuse the cache.
model: $(STAMP)
	$(PY) -m vllm_worker.default_model

HOST ?= 127.0.0.1
PORT ?= 8000

## Start the worker on the default model (or MODEL_NAME) with the runpod SDK's local API server.
run: model
	@echo "Starting the worker; once it logs 'ready for jobs', call it from another shell:"
	@echo "  curl -s http://$(HOST):$(PORT)/runsync -H 'Content-Type: application/json' \\"
	@echo "    -d '{\"input\": {\"prompt\": \"The capital city of France is\", \"sampling_params\": {\"temperature\": 0, \"max_tokens\": 20}}}'"
	$(PY) -m vllm_worker --rp_serve_api --rp_api_host $(HOST) --rp_api_port $(PORT)

## Run every test on the real engine with the default model.
test: model
	$(PY) -m pytest -ra $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
