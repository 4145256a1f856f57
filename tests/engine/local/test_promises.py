"""RunPod's promises through the real endpoint and worker: policy limits, ttl expiry, size limits
per operation, and a hostile request refused without stalling the other streams."""

from __future__ import annotations

import requests

from tests.engine.local import stall
from vllm_worker.local.testing import LocalEndpoint, wait_until

LONG = {"prompt": "Tell a story.", "sampling_params": {"max_tokens": 3000, "ignore_eos": True}}
MS = "must be a whole number of milliseconds from"


def post(endpoint: LocalEndpoint, route: str, body: object) -> requests.Response:
    return requests.post(f"{endpoint.url}/{route}", headers=endpoint.headers, json=body, timeout=60)


def test_absurd_policies_are_refused_naming_the_field(local_endpoint):
    job = {"prompt": "Hi", "sampling_params": {"max_tokens": 2}}
    for policy, field in [
        ({"ttl": 5}, "policy.ttl"),
        ({"ttl": "abc"}, "policy.ttl"),
        ({"ttl": 8 * 24 * 3600 * 1000}, "policy.ttl"),
        ({"executionTimeout": 5}, "policy.executionTimeout"),
        ({"executionTimeout": "abc"}, "policy.executionTimeout"),
    ]:
        for route in ("run", "runsync"):
            refused = post(local_endpoint, route, {"input": job, "policy": policy})
            assert refused.status_code == 400, (policy, refused.text)
            assert refused.json()["error"].startswith(f"{field}: {MS}"), refused.text
    taken = post(
        local_endpoint,
        "runsync",
        {"input": job, "policy": {"ttl": 10_000, "executionTimeout": 5000}},
    )
    assert taken.json()["status"] == "COMPLETED", taken.text


def test_each_operation_has_runpods_size_limit(local_endpoint):
    prompt = "x" * 10_500_000  # over /run's 10 MB, under /runsync's 20 MB
    for route in ("run", "openai/v1/completions"):
        refused = post(local_endpoint, route, {"input": {"prompt": prompt}, "prompt": prompt})
        assert refused.status_code == 413, refused.text
        assert "limit of 10,000,000 bytes" in refused.json()["error"], refused.text
    # /runsync takes it; the worker refuses a prompt no context could hold, at once.
    taken = post(local_endpoint, "runsync", {"input": {"prompt": prompt}})
    assert taken.status_code == 200, taken.text
    body = taken.json()
    assert body["status"] == "FAILED", body
    assert body["error"].startswith("prompt: the input holds more than "), body
    over = post(local_endpoint, "runsync", {"input": {"prompt": "x" * 20_500_000}})
    assert over.status_code == 413 and "limit of 20,000,000 bytes" in over.json()["error"]


def test_a_hostile_request_is_refused_without_stalling_a_running_stream(local_endpoint):
    measured = stall.measure(local_endpoint, stall.hostile_chat(400_000))
    assert measured.status == 400, measured
    assert '"param":"messages.0.content"' in measured.body.replace(" ", ""), measured
    assert "elements, more than the" in measured.body, measured
    assert measured.longest_s < 0.2, measured


def test_a_job_queued_past_its_ttl_times_out_and_never_runs(tmp_path):
    with LocalEndpoint(tmp_path / "endpoint.log", MAX_CONCURRENCY="1") as endpoint:
        endpoint.wait_ready()
        blocker = endpoint.run(LONG, policy={"executionTimeout": 300_000})
        wait_until(lambda: endpoint.status(blocker)["status"] == "IN_PROGRESS", 60, "the blocker")
        queued = endpoint.run(
            {"prompt": "Hi", "sampling_params": {"max_tokens": 2}}, policy={"ttl": 10_000}
        )
        assert endpoint.status(queued)["status"] == "IN_QUEUE"
        expired = endpoint.wait_final(queued, timeout_s=30)
        assert expired["status"] == "TIMED_OUT", expired
        assert expired["error"] == "job expired in the queue: its ttl of 10 s passed before it ran"
        assert "delayTime" not in expired  # no worker ever took it
        endpoint.cancel(blocker)
        endpoint.wait_log(rf"job {blocker} cancelled", timeout_s=30)
        # The worker is free now, and the expired job never reaches it.
        done = post(
            endpoint, "runsync", {"input": {"prompt": "Hi", "sampling_params": {"max_tokens": 2}}}
        )
        assert done.json()["status"] == "COMPLETED"
        assert f"job {queued}" not in endpoint.log_text()
