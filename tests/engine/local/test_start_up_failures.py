"""A worker that cannot start fails every job with the reason instead of exiting.

Each test starts the real worker behind the local endpoint (as `make run` does) with one wrong
setting, submits a job, and checks that the job ends FAILED with the sentence the README
documents, that `/health` carries it, and that the one worker process is still the first one
(never restarted, never exited). Hub answers come from the fake Hub (`tests.fake_hub`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import fake_hub
from tests.engine.local.test_start_up import SMALL_KV_CACHE
from tests.helpers import default_model_folder
from vllm_worker.local.testing import LocalEndpoint

JOB = {"prompt": "Hello", "sampling_params": {"max_tokens": 3}}


def served_failure(log: Path, expected: str, **env: str | None) -> None:
    """Start the endpoint with `env`; a job must fail with `expected`, the worker live on."""
    with LocalEndpoint(log, RESTART_WORKER="false", **env) as endpoint:
        endpoint.wait_ready()
        worker = endpoint.worker()
        assert endpoint.health()["workers"]["startUpFailure"] == expected
        done = endpoint.wait_final(endpoint.run(JOB), timeout_s=60)
        assert done["status"] == "FAILED", done
        assert done["error"] == expected
        assert done["workerId"] == "local-worker-1"  # the first worker: never restarted
        again = endpoint.wait_final(endpoint.run(JOB), timeout_s=60)
        assert again["status"] == "FAILED" and again["error"] == expected
        assert endpoint.worker().pid == worker.pid and worker.is_running()
        health = endpoint.health()
        assert health["workers"]["idle"] == 1 and health["workers"]["unhealthy"] == 0
        log_text = endpoint.log_text()
        assert (
            log_text.count(f"ERROR vllm_worker.failed_worker: the worker cannot start: {expected}")
            == 1
        )
        endpoint.wait_log(re.escape(f"THE WORKER CANNOT START: {expected}"), 10)  # `make run`


def test_an_empty_worker_setting_means_unset(tmp_path):
    with LocalEndpoint(
        tmp_path / "endpoint.log", MAX_CONCURRENCY="", DEFAULT_BATCH_SIZE=" "
    ) as endpoint:
        endpoint.wait_ready()
        assert "startUpFailure" not in endpoint.health()["workers"]
        done = endpoint.wait_final(endpoint.run(JOB))
        assert done["status"] == "COMPLETED", done


def test_an_invalid_setting(tmp_path):
    served_failure(
        tmp_path / "endpoint.log",
        "Invalid setting MAX_CONCURRENCY='many': Input should be a valid integer, unable to "
        "parse string as an integer; correct it, or leave it blank for the default.",
        MAX_CONCURRENCY="many",
    )


def test_a_model_folder_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-model"
    served_failure(
        tmp_path / "endpoint.log",
        f"MODEL_NAME={missing} is neither a folder on this machine nor a Hugging Face Hub id: "
        "give an existing model folder, or a Hub id such as HuggingFaceTB/SmolLM2-135M-Instruct.",
        MODEL_NAME=str(missing),
    )


@pytest.fixture
def hub_env(fake_hub: str) -> dict[str, str | None]:
    """The worker's Hub is the fake one; no token or offline mode from this shell."""
    return {"HF_ENDPOINT": fake_hub, "HF_TOKEN": None, "HF_HUB_OFFLINE": None}


def test_a_model_the_hub_does_not_have(tmp_path, hub_env):
    served_failure(
        tmp_path / "endpoint.log",
        f"MODEL_NAME={fake_hub.MISSING} is not a repository on the Hugging Face Hub, or it is "
        "private and HF_TOKEN is unset: check the id (owner/name), or set HF_TOKEN to a token "
        "with access.",
        MODEL_NAME=fake_hub.MISSING,
        **hub_env,
    )


def test_a_gated_model_without_a_token(tmp_path, hub_env):
    served_failure(
        tmp_path / "endpoint.log",
        f"MODEL_NAME={fake_hub.GATED} is a gated model and HF_TOKEN is unset: accept its terms "
        "on huggingface.co and set HF_TOKEN to a token of that account.",
        MODEL_NAME=fake_hub.GATED,
        **hub_env,
    )


def test_a_revision_the_model_does_not_have(tmp_path, hub_env):
    served_failure(
        tmp_path / "endpoint.log",
        f"MODEL_REVISION is not a branch, tag or commit of {fake_hub.PUBLIC}: set it to one "
        "that exists, or leave it blank for the default branch.",
        MODEL_NAME=fake_hub.PUBLIC,
        MODEL_REVISION="no-such-branch",
        **hub_env,
    )


def test_max_model_len_above_the_models_limit(tmp_path):
    served_failure(
        tmp_path / "endpoint.log",
        "MAX_MODEL_LEN=100000 is more than this model's limit of 8192 tokens: set "
        "MAX_MODEL_LEN=8192 or less, or leave it blank for the model's own.",
        MAX_MODEL_LEN="100000",
    )


def test_a_kv_cache_too_small_for_an_explicit_max_model_len(tmp_path):
    # The engine core fails to start: the length that fits is only in what it printed.
    served_failure(
        tmp_path / "endpoint.log",
        "MAX_MODEL_LEN=8192 does not fit the KV cache, which holds at most 896 tokens for one "
        "request: set MAX_MODEL_LEN=896 or less (or leave it blank to serve what fits), or "
        "give the cache more memory with GPU_MEMORY_UTILIZATION or KV_CACHE_MEMORY_BYTES.",
        KV_CACHE_MEMORY_BYTES=SMALL_KV_CACHE,
        MAX_MODEL_LEN="8192",
    )


def test_a_lora_adapter_that_does_not_exist(tmp_path):
    # Found only once vLLM's OpenAI server is built on the running engine.
    missing = tmp_path / "no-such-adapter"
    served_failure(
        tmp_path / "endpoint.log",
        f"LORA_MODULES names the adapter missing at {missing}, which could not be loaded: give "
        "it an existing adapter folder or Hub id, or leave LORA_MODULES blank.",
        ENABLE_LORA="true",
        LORA_MODULES=json.dumps({"name": "missing", "path": str(missing)}),
    )


def test_an_architecture_this_vllm_does_not_support(tmp_path):
    import vllm

    # The default model under an architecture name no vLLM has.
    source, folder = default_model_folder(), tmp_path / "foo-model"
    folder.mkdir()
    for file in source.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((source / "config.json").read_text())
    config["architectures"] = ["FooForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    served_failure(
        tmp_path / "endpoint.log",
        f"MODEL_NAME={folder} has the architecture ['FooForCausalLM'], which vLLM "
        f"{vllm.__version__} does not support: choose a model of a supported architecture "
        "(https://docs.vllm.ai/en/latest/models/supported_models.html).",
        MODEL_NAME=str(folder),
    )
