"""When the worker process dies, the local endpoint says so instead of leaving jobs hanging."""

from __future__ import annotations

import os
import signal
import time

import requests

from vllm_worker.local.testing import LocalEndpoint

LONG_JOB = {
    "prompt": "Tell a long story.",
    "stream": True,
    "sampling_params": {"max_tokens": 3000, "ignore_eos": True},
}
#: What a job running (or, without a restart, queued) on a worker killed by SIGKILL ends with.
KILLED = "the worker process exited with code -9 while this job was running"


def start_long_job(endpoint: LocalEndpoint) -> str:
    """Submit LONG_JOB and return its id once its first tokens have streamed."""
    job_id = endpoint.run(LONG_JOB)
    first = endpoint.wait_stream(job_id, timeout_s=60)
    assert first["status"] == "IN_PROGRESS" and first["stream"], first
    return job_id


def test_dead_worker_fails_its_jobs_and_is_restarted_when_asked(tmp_path):
    with LocalEndpoint(tmp_path / "log", api_key=None, RESTART_WORKER="true") as endpoint:
        endpoint.wait_ready()
        job_id = start_long_job(endpoint)
        os.kill(endpoint.worker_pid(), signal.SIGKILL)
        status = endpoint.wait_final(job_id, timeout_s=30)
        assert status["status"] == "FAILED" and status["error"] == KILLED, status
        # The new worker needs a whole engine start: until then no worker takes jobs.
        workers = endpoint.health()["workers"]
        assert workers["idle"] == workers["running"] == 0, workers
        endpoint.wait_log(r"worker exited with code -9; restarting it")
        endpoint.wait_ready()  # a new worker took over
        done = requests.post(
            f"{endpoint.url}/runsync",
            json={"input": {"prompt": "Hi", "sampling_params": {"max_tokens": 3}}},
            timeout=120,
        ).json()
        assert done["status"] == "COMPLETED", done


def test_dead_worker_stops_the_endpoint_with_a_non_zero_exit(tmp_path):
    # One job at a time, so the second job is still queued when the worker dies.
    with LocalEndpoint(tmp_path / "log", api_key=None, MAX_CONCURRENCY="1") as endpoint:
        endpoint.wait_ready()
        job_id = start_long_job(endpoint)
        queued = endpoint.run(LONG_JOB)
        assert endpoint.status(queued)["status"] == "IN_QUEUE"
        os.kill(endpoint.worker_pid(), signal.SIGKILL)
        # Both fail at once; the endpoint stays up a few seconds so clients can read that.
        for pending in (job_id, queued):
            status = endpoint.wait_final(pending, timeout_s=10)
            assert status["status"] == "FAILED" and status["error"] == KILLED, status
        assert endpoint.process.wait(60) != 0


def test_runsync_returns_the_in_progress_status_after_its_wait(local_endpoint):
    h = local_endpoint.headers
    started = time.monotonic()
    body = requests.post(
        f"{local_endpoint.url}/runsync?wait=1500", headers=h, json={"input": LONG_JOB}, timeout=30
    ).json()
    assert 1.4 < time.monotonic() - started < 10
    # The worker is idle and takes the job at once; it runs for minutes.
    assert body["status"] == "IN_PROGRESS" and body["id"], body
    mark = len(local_endpoint.log_text())
    assert local_endpoint.cancel(body["id"])["status"] == "CANCELLED"
    local_endpoint.wait_log(rf"job {body['id']} cancelled", timeout_s=30, start=mark)


def test_execution_timeout_ends_the_job_timed_out(local_endpoint):
    job_id = local_endpoint.run(LONG_JOB, policy={"executionTimeout": 5000})
    status = local_endpoint.wait_final(job_id, timeout_s=30)
    assert status["status"] == "TIMED_OUT", status
    assert status["error"] == "job exceeded its execution timeout of 5 s", status
    # The worker stops the job and aborts its vLLM request.
    local_endpoint.wait_log(rf"job {job_id} cancelled", timeout_s=30)
