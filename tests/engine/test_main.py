"""`python -m vllm_worker` as the platform starts it: a failure it cannot name still exits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from tests import fake_hub


def engine_processes() -> set[int]:
    """Every vLLM engine-core and model-runner process on this machine."""
    return {
        process.pid
        for process in psutil.process_iter(["name"])
        if (process.info["name"] or "").startswith("VLLM::")
    }


def test_an_unclassified_start_up_failure_exits_non_zero(tmp_path):
    """With no Hub to reach, the pre-flight lets the start go on (the download may work) and
    vLLM cannot load the model: a failure that may pass by itself, so the worker exits and the
    platform replaces it, instead of failing jobs."""
    env = {
        **os.environ,
        "MODEL_NAME": fake_hub.PUBLIC,
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there
        # Platform mode, pointed at a port nothing listens on: no job can arrive.
        "RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:9/_worker/job-take/$ID",
        "RUNPOD_POD_ID": "start-up-test",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        env.pop(var, None)
    before = engine_processes()  # the session's shared engine, if a test started it
    done = subprocess.run(
        [sys.executable, "-m", "vllm_worker"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert f"could not check {fake_hub.PUBLIC} on the Hugging Face Hub" in done.stderr
    assert " ERROR vllm_worker: start-up failed" in done.stderr, done.stderr[-3000:]
    assert "the worker cannot start" not in done.stderr  # not served as a known failure
    assert "Starting Serverless Worker" not in done.stdout + done.stderr
    deadline = time.monotonic() + 30  # vLLM's children end moments after their parent
    while not engine_processes() <= before:
        assert time.monotonic() < deadline, "the worker left its engine's processes behind"
        time.sleep(0.2)
