"""The local endpoint's timing rules with a real worker: queue time is not execution time."""

from __future__ import annotations

import requests

from vllm_worker.local.testing import LocalEndpoint, wait_until

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_an_openai_call_queued_past_the_execution_timeout_still_runs_once(tmp_path):
    with LocalEndpoint(
        tmp_path / "endpoint.log", MAX_CONCURRENCY="1", EXECUTION_TIMEOUT="2"
    ) as endpoint:
        endpoint.wait_ready()
        # Several seconds of generation on any CPU, under its own, longer limit.
        long = {
            "prompt": "Tell a story.",
            "sampling_params": {"max_tokens": 400, "ignore_eos": True},
        }
        blocker = endpoint.run(long, policy={"executionTimeout": 300_000})
        wait_until(lambda: endpoint.status(blocker)["status"] == "IN_PROGRESS", 60, "the blocker")
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 3,
            "ignore_eos": True,
        }
        response = requests.post(
            f"{endpoint.url}/openai/v1/chat/completions",
            headers=endpoint.headers,
            json=body,
            timeout=600,
        )
        assert endpoint.status(blocker)["status"] == "COMPLETED"  # it waited the whole queue
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 3
        runs = endpoint.log_text().count("route=/v1/chat/completions")
        assert runs == 1, f"the OpenAI job ran {runs} times"
