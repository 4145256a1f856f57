"""Measure how long a running stream stalls while the endpoint refuses a hostile request.

A native job streams one token per item; a thread reads `/stream` back to back and notes when
each item arrives. The stall is the longest gap between two arrivals that overlaps the time the
hostile request was in flight: measured from what the client received, never slept.

`python -m tests.engine.local.stall` prints the numbers for the code on PYTHONPATH (wrap it in
`flock /tmp/engine.lock`: it starts an engine).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from vllm_worker.local.testing import LocalEndpoint

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: Thousands of tokens, one per item: it streams for the whole measurement.
STREAM_JOB = {
    "prompt": "Tell a very long story.",
    "stream": True,
    "max_batch_size": 1,
    "min_batch_size": 1,
    "sampling_params": {"max_tokens": 4000, "ignore_eos": True},
}


def hostile_chat(elements: int = 400_000) -> dict:
    """An OpenAI chat request whose one message's content is a list of `elements` integers."""
    return {"model": MODEL, "messages": [{"role": "user", "content": list(range(elements))}]}


@dataclasses.dataclass
class Stall:
    longest_s: float  # longest gap between stream items overlapping the hostile request
    baseline_s: float  # longest gap in the second before it
    refused_in_s: float  # how long the hostile request took to be answered
    status: int  # its HTTP status
    body: str  # its answer


def measure(endpoint: LocalEndpoint, hostile: dict) -> Stall:
    """Stream a job, send `hostile` to the OpenAI chat route, and measure the stream's stall."""
    job_id = endpoint.run(STREAM_JOB)
    first = endpoint.wait_stream(job_id, timeout_s=120)
    assert first["status"] == "IN_PROGRESS" and first["stream"], first
    arrivals: list[float] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            body = endpoint.request("POST", f"stream/{job_id}").json()
            if body["stream"]:
                arrivals.append(time.monotonic())
            if body["status"] != "IN_PROGRESS":
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1.5)  # the baseline: a second and a half of undisturbed streaming
        sent = time.monotonic()
        response = requests.post(
            f"{endpoint.url}/openai/v1/chat/completions",
            headers=endpoint.headers,
            json=hostile,
            timeout=300,
        )
        answered = time.monotonic()
        time.sleep(0.5)  # items due right after the answer show whether the stream resumed
    finally:
        done.set()
        reader.join(10)
        endpoint.cancel(job_id)
    assert arrivals and arrivals[-1] > answered, "the stream ended during the measurement"
    gaps = list(itertools.pairwise(arrivals))
    during = [b - a for a, b in gaps if b > sent and a < answered]
    before = [b - a for a, b in gaps if b <= sent and a >= sent - 1.0]
    return Stall(
        longest_s=max(during, default=answered - sent),
        baseline_s=max(before, default=0.0),
        refused_in_s=answered - sent,
        status=response.status_code,
        body=response.text[:300],
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "endpoint.log"
        with LocalEndpoint(log, MAX_CONCURRENCY="8") as endpoint:
            endpoint.wait_ready()
            for elements in (400_000, 8192):
                stall = measure(endpoint, hostile_chat(elements))
                print(f"content of {elements:,} integers: {stall}", file=sys.stderr)


if __name__ == "__main__":
    main()
