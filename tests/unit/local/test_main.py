"""`python -m vllm_worker.local`'s checks before it starts anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def start(**env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("RUNPOD_API_KEY", "HOST")}
    return subprocess.run(
        [sys.executable, "-m", "vllm_worker.local"],
        env={**environ, "PORT": "9", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("key", [None, "", "   "])
def test_a_missing_or_empty_key_keeps_the_endpoint_off_other_interfaces(key):
    env = {"HOST": "0.0.0.0"} if key is None else {"HOST": "0.0.0.0", "RUNPOD_API_KEY": key}
    done = start(**env)
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without RUNPOD_API_KEY" in done.stderr


def test_an_invalid_endpoint_setting_stops_the_endpoint_before_the_worker():
    # A wrong worker setting is the worker's to report (each job fails with it): see
    # tests/engine/local/test_start_up_failures.py. The endpoint's own cannot be served.
    done = start(EXECUTION_TIMEOUT="soon")
    assert done.returncode == 2
    assert "local endpoint: invalid setting: EXECUTION_TIMEOUT='soon'" in done.stderr
