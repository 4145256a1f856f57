"""`python -m vllm_worker` as the platform starts it: a serving set-up failure ends start-up."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil


def engine_processes() -> set[int]:
    """Every vLLM engine-core and model-runner process on this machine."""
    return {
        process.pid
        for process in psutil.process_iter(["name"])
        if (process.info["name"] or "").startswith("VLLM::")
    }


def test_a_serving_set_up_failure_stops_the_worker_before_it_takes_a_job(tmp_path):
    missing = tmp_path / "no-such-adapter"
    env = {
        **os.environ,
        "ENABLE_LORA": "true",
        "LORA_MODULES": f'{{"name": "missing", "path": "{missing}"}}',
        # Platform mode, pointed at a port nothing listens on: no job can arrive.
        "RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:9/_worker/job-take/$ID",
        "RUNPOD_POD_ID": "start-up-test",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }
    env.pop("MODEL_NAME", None)
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
    errors = [line for line in done.stderr.splitlines() if " ERROR vllm_worker: " in line]
    assert errors, done.stderr[-3000:]
    assert "vLLM's OpenAI server could not start" in errors[-1]
    assert "Loading lora missing failed" in errors[-1]  # vLLM hides the path itself
    assert "ready for jobs" not in done.stderr
    deadline = time.monotonic() + 30  # vLLM's children end moments after their parent
    while not engine_processes() <= before:
        assert time.monotonic() < deadline, "the worker left its engine's processes behind"
        time.sleep(0.2)
