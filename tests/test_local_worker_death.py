"""When the worker process dies, the local endpoint says so instead of leaving jobs hanging."""

from __future__ import annotations

import os
import signal
import time

import pytest
import requests

from tests.local_endpoint import LocalEndpoint

pytestmark = pytest.mark.engine

LONG_JOB = {
    "prompt": "Tell a long story.",
    "stream": True,
    "sampling_params": {"max_tokens": 3000, "ignore_eos": True},
}


def start_long_job(endpoint: LocalEndpoint) -> str:
    job_id = requests.post(f"{endpoint.url}/run", json={"input": LONG_JOB}, timeout=10).json()["id"]
    while not requests.get(f"{endpoint.url}/stream/{job_id}", timeout=10).json()["stream"]:
        pass
    return job_id


def test_dead_worker_fails_its_jobs_and_is_restarted_when_asked(tmp_path):
    endpoint = LocalEndpoint(tmp_path / "log", api_key=None, RESTART_WORKER="true")
    try:
        endpoint.wait_ready()
        job_id = start_long_job(endpoint)
        os.kill(endpoint.worker_pid(), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (status := requests.get(f"{endpoint.url}/status/{job_id}", timeout=10).json())[
            "status"
        ] == "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert status["status"] == "FAILED"
        assert "worker process exited" in status["error"]
        workers = requests.get(f"{endpoint.url}/health", timeout=10).json()["workers"]
        assert workers["idle"] == workers["running"] == 0
        endpoint.wait_ready()  # a new worker took over
        done = requests.post(
            f"{endpoint.url}/runsync",
            json={"input": {"prompt": "Hi", "sampling_params": {"max_tokens": 3}}},
            timeout=120,
        ).json()
        assert done["status"] == "COMPLETED"
    finally:
        endpoint.stop()


def test_dead_worker_stops_the_endpoint_with_a_non_zero_exit(tmp_path):
    endpoint = LocalEndpoint(tmp_path / "log", api_key=None)
    try:
        endpoint.wait_ready()
        job_id = start_long_job(endpoint)
        queued = requests.post(f"{endpoint.url}/run", json={"input": LONG_JOB}, timeout=10).json()[
            "id"
        ]
        os.kill(endpoint.worker_pid(), signal.SIGKILL)
        time.sleep(1)
        for pending in (job_id, queued):
            status = requests.get(f"{endpoint.url}/status/{pending}", timeout=10).json()
            assert status["status"] == "FAILED" and "worker process exited" in status["error"]
        assert endpoint.process.wait(60) != 0
    finally:
        endpoint.stop()


def test_runsync_returns_the_in_progress_status_after_its_wait(local_endpoint):
    h = local_endpoint.headers
    started = time.monotonic()
    body = requests.post(
        f"{local_endpoint.url}/runsync?wait=1500", headers=h, json={"input": LONG_JOB}, timeout=30
    ).json()
    assert 1.4 < time.monotonic() - started < 10
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS") and body["id"]
    requests.post(f"{local_endpoint.url}/cancel/{body['id']}", headers=h, timeout=10)


def test_execution_timeout_ends_the_job_timed_out(local_endpoint):
    h = local_endpoint.headers
    job = {"input": LONG_JOB, "policy": {"executionTimeout": 2000}}
    job_id = requests.post(f"{local_endpoint.url}/run", headers=h, json=job, timeout=10).json()[
        "id"
    ]
    deadline = time.monotonic() + 30
    while (
        status := requests.get(
            f"{local_endpoint.url}/status/{job_id}", headers=h, timeout=10
        ).json()
    )["status"] in ("IN_QUEUE", "IN_PROGRESS"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["status"] == "TIMED_OUT"
    while f"job {job_id} cancelled" not in local_endpoint.log.read_text():
        assert time.monotonic() < deadline, "the worker never stopped the timed-out job"
        time.sleep(0.2)
