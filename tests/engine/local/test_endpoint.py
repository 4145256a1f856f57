"""RunPod's documented requests, unchanged but for base URL and key, against the local endpoint.

The endpoint runs the real worker (SDK platform mode, real engine, default model) in its own
processes, exactly as `make run` starts them.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import threading
import time

import pytest
import requests

from vllm_worker.local.testing import wait_until

POEM_JOB = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a short poem."},
    ],
    "sampling_params": {"temperature": 0.7, "max_tokens": 100},
}
HAIKU_JOB = {
    "prompt": "Write a haiku about nature.",
    "sampling_params": {"temperature": 0.8, "max_tokens": 50},
}
LONG_STREAM = {
    "prompt": "Tell a very long story.",
    "stream": True,
    "sampling_params": {"max_tokens": 3000, "ignore_eos": True},
}


def poll(endpoint, job_id: str, timeout_s: float = 120) -> dict:
    """The job's final /status body; TimeoutError (with the last status) after `timeout_s`."""
    return endpoint.wait_final(job_id, timeout_s)


def cancel(endpoint, job_id: str) -> None:
    """Cancel a job and, when a worker was running it, wait until the worker has logged its
    end (a cancelled job's request is aborted first), so the next test finds an idle engine."""
    mark = len(endpoint.log_text())
    running = endpoint.status(job_id)["status"] == "IN_PROGRESS"
    endpoint.cancel(job_id)
    if running:
        endpoint.wait_log(rf"job {job_id} \w+ in ", timeout_s=30, start=mark)


def output_text(result: dict) -> str:
    return "".join(t for item in result["output"] for t in item["choices"][0]["tokens"])


def test_requests_run_then_status(local_endpoint):
    """The page's Python example: POST /run with requests, then poll /status."""
    response = requests.post(
        f"{local_endpoint.url}/run",
        headers={**local_endpoint.headers, "Content-Type": "application/json"},
        json={"input": POEM_JOB},
        timeout=10,
    )
    assert response.status_code == 200
    started = response.json()
    assert started["status"] == "IN_QUEUE" and started["id"]
    result = poll(local_endpoint, started["id"])
    assert result["status"] == "COMPLETED"
    assert result["delayTime"] >= 0 and result["executionTime"] > 0
    assert output_text(result).strip()
    assert result["output"][0]["usage"]["output"] > 0


def curl(endpoint, path: str, body: dict) -> dict:
    completed = subprocess.run(
        [
            "curl", "-sS", "-X", "POST", f"{endpoint.url}/{path}",
            "-H", f"Authorization: Bearer {endpoint.api_key}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps(body),
        ],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(completed.stdout)


def test_curl_run_and_runsync(local_endpoint):
    """The page's cURL example, to /run and to /runsync."""
    queued = curl(local_endpoint, "run", {"input": HAIKU_JOB})
    assert queued["status"] == "IN_QUEUE"
    assert poll(local_endpoint, queued["id"])["status"] == "COMPLETED"

    job = {
        "prompt": "The capital city of France is",
        "sampling_params": {"temperature": 0, "max_tokens": 20},
    }
    done = curl(local_endpoint, "runsync", {"input": job})
    assert done["status"] == "COMPLETED"
    assert "Paris" in output_text(done)


@pytest.fixture
def runpod_endpoint(local_endpoint):
    import runpod

    runpod.api_key = local_endpoint.api_key
    runpod.endpoint_url_base = local_endpoint.url.rsplit("/", 1)[0]
    return runpod.Endpoint("local")


def test_runpod_sdk_run_sync_run_and_stream(runpod_endpoint):
    output = runpod_endpoint.run_sync({"input": POEM_JOB}, timeout=120)
    assert output[0]["choices"][0]["tokens"][0].strip()

    job = runpod_endpoint.run({"input": HAIKU_JOB})
    assert job.output(timeout=120)[0]["usage"]["output"] > 0
    assert job.status() == "COMPLETED"

    streamed = runpod_endpoint.run(
        {
            "input": {
                **HAIKU_JOB,
                "stream": True,
                "sampling_params": {"max_tokens": 40, "ignore_eos": True},
            }
        }
    )
    # The SDK's stream() polls until the job ends, without a deadline: a job still running
    # after 120 s is cancelled, which ends the loop and fails the test.
    overran = threading.Event()
    watchdog = threading.Timer(120, lambda: (overran.set(), streamed.cancel()))
    watchdog.start()
    try:
        items = list(streamed.stream())
    finally:
        watchdog.cancel()
    assert not overran.is_set(), "the streamed job did not end within 120 s"
    assert streamed.status() == "COMPLETED"
    assert [item["usage"]["output"] for item in items] == [1, 4, 13, 40]


def test_stream_delivers_batches_while_the_job_runs(local_endpoint):
    job_id = local_endpoint.run(LONG_STREAM)
    try:
        body = local_endpoint.wait_stream(job_id, timeout_s=60)
        assert body["status"] == "IN_PROGRESS", body
        first = [item["output"]["usage"]["output"] for item in body["stream"]]
        assert first[0] == 1, first
        # The next call returns only what came since, while the job still runs.
        again = requests.post(
            f"{local_endpoint.url}/stream/{job_id}", headers=local_endpoint.headers, timeout=10
        ).json()
        assert again["status"] == "IN_PROGRESS", again
        counts = [item["output"]["usage"]["output"] for item in again["stream"]]
        assert counts, "the second /stream call brought nothing within its wait"
        assert first[-1] < counts[0] and counts == sorted(set(counts)), (first, counts)
    finally:
        cancel(local_endpoint, job_id)


def test_cancel_mid_stream_ends_the_job_and_aborts_the_request(local_endpoint):
    job_id = local_endpoint.run(LONG_STREAM)
    first = local_endpoint.wait_stream(job_id, timeout_s=60)
    assert first["status"] == "IN_PROGRESS" and first["stream"], first
    mark = len(local_endpoint.log_text())
    cancelled = requests.post(
        f"{local_endpoint.url}/cancel/{job_id}", headers=local_endpoint.headers, timeout=10
    )
    assert cancelled.json() == {"id": job_id, "status": "CANCELLED"}
    assert local_endpoint.status(job_id)["status"] == "CANCELLED"
    # The worker's handler logs the end of the job after its vLLM request was aborted.
    local_endpoint.wait_log(rf"job {job_id} cancelled", timeout_s=30, start=mark)
    health = requests.get(
        f"{local_endpoint.url}/health", headers=local_endpoint.headers, timeout=10
    ).json()
    assert health["jobs"]["inProgress"] == 0


def test_fifty_jobs_at_once_all_complete_exactly_once(local_endpoint):
    def submit(i: int) -> str:
        job = {
            "prompt": f"Item {i}:",
            "stream": i % 2 == 0,
            "sampling_params": {"max_tokens": 8 + i % 5, "ignore_eos": True},
        }
        return requests.post(
            f"{local_endpoint.url}/run",
            headers=local_endpoint.headers,
            json={"input": job},
            timeout=30,
        ).json()["id"]

    ended = local_endpoint.jobs_ended()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        most_running = pool.submit(
            local_endpoint.most_in_progress, until_done=50, timeout_s=300, since=ended
        )
        ids = list(pool.map(submit, range(50)))
        assert len(set(ids)) == 50
        results = [poll(local_endpoint, job_id, timeout_s=300) for job_id in ids]
        # MAX_CONCURRENCY, used in full and never exceeded.
        assert most_running.result(timeout=60) == 8
    assert [r["status"] for r in results] == ["COMPLETED"] * 50
    assert [r["output"][-1]["usage"]["output"] for r in results] == [8 + i % 5 for i in range(50)]
    log = local_endpoint.log.read_text()
    assert all(len(re.findall(rf"job {job_id} completed", log)) == 1 for job_id in ids)


def test_failed_job_shows_failed_with_its_error(local_endpoint):
    job_id = requests.post(
        f"{local_endpoint.url}/run",
        headers=local_endpoint.headers,
        json={"input": {"prompt": "Hi", "sampling_params": {"top_p": 7}}},
        timeout=10,
    ).json()["id"]
    result = poll(local_endpoint, job_id)
    assert result["status"] == "FAILED"
    assert result["error"].startswith("sampling_params.top_p")


def test_requests_need_the_key(local_endpoint):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert (
            requests.post(
                f"{local_endpoint.url}/run", headers=headers, json={"input": HAIKU_JOB}, timeout=10
            ).status_code
            == 401
        )
        assert (
            requests.get(f"{local_endpoint.url}/health", headers=headers, timeout=10).status_code
            == 401
        )
        assert (
            requests.post(
                f"{local_endpoint.url}/openai/v1/chat/completions",
                headers=headers,
                json={},
                timeout=10,
            ).status_code
            == 401
        )


def test_the_bearer_scheme_name_is_case_insensitive(local_endpoint):
    for scheme in ("bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {local_endpoint.api_key}"}
        health = requests.get(f"{local_endpoint.url}/health", headers=headers, timeout=10)
        assert health.status_code == 200, scheme


def test_a_failed_job_retried_runs_again_once(local_endpoint):
    job_id = local_endpoint.run({"prompt": "Hi", "sampling_params": {"top_p": 7}})
    assert local_endpoint.wait_final(job_id)["status"] == "FAILED"
    retried = requests.post(
        f"{local_endpoint.url}/retry/{job_id}", headers=local_endpoint.headers, timeout=10
    )
    assert retried.json() == {"id": job_id, "status": "IN_QUEUE"}
    again = local_endpoint.wait_final(job_id)
    assert again["status"] == "FAILED" and again["error"].startswith("sampling_params.top_p")
    assert local_endpoint.health()["jobs"]["retried"] >= 1  # the endpoint's running total
    line = f"job {job_id} failed in "
    wait_until(lambda: local_endpoint.log_text().count(line) == 2, 30, "the second run's log line")
    assert local_endpoint.log_text().count(line) == 2  # one run per call, no more


def test_bad_requests_get_clear_http_errors(local_endpoint):
    h = local_endpoint.headers
    assert (
        requests.post(
            f"{local_endpoint.url}/run", headers=h, json={"prompt": "no input"}, timeout=10
        ).status_code
        == 400
    )
    assert (
        requests.post(
            f"{local_endpoint.url}/run", headers=h, data=b"{not json", timeout=10
        ).status_code
        == 400
    )
    assert (
        requests.get(f"{local_endpoint.url}/status/nope", headers=h, timeout=10).status_code == 404
    )
    huge = requests.post(
        f"{local_endpoint.url}/run",
        headers=h,
        json={"input": {"prompt": "x" * 11_000_000}},
        timeout=30,
    )
    assert huge.status_code == 413 and "limit" in huge.json()["error"]


def test_purge_queue_and_health_shapes(local_endpoint):
    h = local_endpoint.headers
    assert requests.post(f"{local_endpoint.url}/purge-queue", headers=h, timeout=10).json() == {
        "removed": 0,
        "status": "completed",
    }
    health = requests.get(f"{local_endpoint.url}/health", headers=h, timeout=10).json()
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert health["workers"]["idle"] + health["workers"]["running"] == 1


# --- the official OpenAI client, exactly as in RunPod's documentation ----------------------

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def client(local_endpoint):
    from openai import OpenAI

    # As documented, plus a deadline per request, and no retries: a retry would hide a failure.
    return OpenAI(
        api_key=local_endpoint.api_key,
        base_url=f"{local_endpoint.url}/openai/v1",
        timeout=120,
        max_retries=0,
    )


def test_openai_client_chat_completion(client):
    response = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in response.choices[0].message.content
    assert response.usage.completion_tokens > 0


def test_openai_client_streaming_arrives_while_generating(client):
    # The clock starts before the request: create() returns once the response has begun,
    # which is already the end when the whole stream comes at once.
    started = time.monotonic()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a short poem about stars."}],
        temperature=0.7,
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    arrivals, text, usage = [], "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - started)
            text += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    assert text.strip()
    assert usage is not None and usage.completion_tokens == 200, usage
    # One chunk per batch: 1, 3, 9, 27, 50, ... tokens (fewer chunks when the engine merges).
    assert 4 <= len(arrivals) <= 8, len(arrivals)
    assert arrivals[0] < arrivals[-1] / 3, (
        f"the first token came after {arrivals[0]:.2f} s, the last after {arrivals[-1]:.2f} s"
    )


def test_openai_client_completions_and_models(client):
    response = client.completions.create(
        model=MODEL, prompt="The capital city of France is", temperature=0, max_tokens=20
    )
    assert "Paris" in response.choices[0].text
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_openai_client_sees_openai_errors_with_their_status(client):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "Hi"}]
        )
    assert "no-such-model" in str(caught.value)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=-5
        )
