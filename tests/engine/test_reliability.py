"""Load, cancellation storms, hostile input, logs, graceful stop and engine death, all through
the local endpoint with the real worker (its own engine) as `make run` starts it."""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import signal
import time

import psutil
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllm_worker.local.testing import LocalEndpoint, wait_until

API_KEY = "rel-api-key-5f2c9a"
HF_TOKEN = "hf_reliability_secret_token_8d1e"
SECRET_PROMPT = "zebra-violet-quasar"  # must never reach a log line


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    endpoint = LocalEndpoint(
        tmp_path_factory.mktemp("reliability") / "endpoint.log",
        api_key=API_KEY,
        MAX_CONCURRENCY="16",
        RESTART_WORKER="true",
        SHUTDOWN_GRACE_PERIOD="4",
        HF_TOKEN=HF_TOKEN,
        VLLM_LOG_STATS_INTERVAL="1",
    )
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()


def post(endpoint, path: str, body: object, timeout: float = 30) -> requests.Response:
    return requests.post(
        f"{endpoint.url}/{path}", headers=endpoint.headers, json=body, timeout=timeout
    )


def status(endpoint, job_id: str) -> dict:
    return requests.get(
        f"{endpoint.url}/status/{job_id}", headers=endpoint.headers, timeout=10
    ).json()


def wait_final(endpoint, job_id: str, timeout_s: float = 300) -> dict:
    return endpoint.wait_final(job_id, timeout_s)


def worker(endpoint) -> psutil.Process:
    return endpoint.worker()


def wait_log(endpoint, pattern: str, timeout_s: float = 60) -> re.Match:
    return endpoint.wait_log(pattern, timeout_s)


# --- hostile input -----------------------------------------------------------------------

JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = ["prompt", "messages", "sampling_params", "stream", "apply_chat_template", "max_batch_size",
        "min_batch_size", "batch_size_growth_factor", "openai_route", "openai_input"]  # fmt: skip
ROUTES = st.sampled_from(
    ["/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/nope", "/health", "", "v1/x"]
)
SAMPLING = st.dictionaries(
    st.sampled_from(
        [
            "max_tokens",
            "temperature",
            "top_p",
            "n",
            "best_of",
            "stop",
            "seed",
            "logprobs",
            "use_beam_search",
            "bogus",
        ]
    ),
    JSON_LEAF | st.lists(JSON_LEAF, max_size=3),
    max_size=4,
)
JOB_INPUT = st.one_of(
    JSON_ANY,
    st.fixed_dictionaries(
        {},
        optional={
            "prompt": st.text(max_size=30) | JSON_LEAF,
            "messages": st.lists(
                st.dictionaries(st.sampled_from(["role", "content", "x"]), JSON_LEAF, max_size=3),
                max_size=3,
            )
            | JSON_ANY,
            "sampling_params": SAMPLING | JSON_ANY,
            "stream": JSON_LEAF,
            "max_batch_size": JSON_LEAF,
            "openai_route": ROUTES | JSON_LEAF,
            "openai_input": st.dictionaries(
                st.sampled_from(["model", "messages", "prompt", "max_tokens", "stream", "n"]),
                JSON_ANY,
                max_size=4,
            ),
        },
    ),
    st.dictionaries(st.sampled_from(KEYS), JSON_ANY, max_size=5),
)
RAW_BODIES = st.sampled_from(
    [
        b"{not json",
        b'{"input": NaN}',
        b'{"input": {"prompt": "\\ud800"}}',
        b'{"input": {"prompt": 1e999}}',
        b"[" * 200 + b"]" * 200,
        b'{"input": ' + b"[" * 100 + b"]" * 100 + b"}",
        b"\xff\xfe\x00garbage",
        b"",
        b"[]",
        b'"just a string"',
    ]
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(job_input=JOB_INPUT, raw=st.none() | RAW_BODIES)
def test_hostile_input_never_breaks_the_endpoint_or_the_worker(endpoint, job_input, raw):
    if raw is not None:
        response = requests.post(
            f"{endpoint.url}/run", headers=endpoint.headers, data=raw, timeout=30
        )
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["error"]
        return
    response = post(endpoint, "runsync", {"input": job_input}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] in ("COMPLETED", "FAILED"), body
    if body["status"] == "FAILED":
        assert isinstance(body["error"], str) and body["error"].strip()
        assert len(body["error"].splitlines()) < 40  # a message, not a dump


def test_after_hostile_input_a_valid_job_succeeds_and_big_bodies_get_413(endpoint):
    done = post(
        endpoint, "runsync", {"input": {"prompt": "Hello", "sampling_params": {"max_tokens": 4}}}
    ).json()
    assert done["status"] == "COMPLETED" and done["output"][0]["usage"]["output"] == 4
    huge = requests.post(
        f"{endpoint.url}/run",
        headers=endpoint.headers,
        data=b'{"input": "' + b"x" * 10_100_000 + b'"}',
        timeout=60,
    )
    assert huge.status_code == 413
    assert "restarting" not in endpoint.log.read_text()


# --- load ----------------------------------------------------------------------------------


def _load_job(i: int) -> tuple[dict, int]:
    """A mixed job and its exact output token count (fixed lengths make results checkable)."""
    tokens = 6 + i % 7
    kind = i % 4
    if kind == 0:
        return {
            "prompt": f"Item {i}:",
            "sampling_params": {"max_tokens": tokens, "ignore_eos": True},
        }, tokens
    if kind == 1:
        return {
            "prompt": f"Item {i}:",
            "stream": True,
            "sampling_params": {"max_tokens": tokens, "ignore_eos": True},
        }, tokens
    body = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": f"Item {i}"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": kind == 3,
    }
    if kind == 3:
        body["stream_options"] = {"include_usage": True}
    return {"openai_route": "/v1/chat/completions", "openai_input": body}, tokens


def _completion_tokens(result: dict, job_input: dict) -> int:
    output = result["output"]
    if "openai_route" not in job_input:
        return output[-1]["usage"]["output"]
    if not job_input["openai_input"]["stream"]:
        return output[0]["usage"]["completion_tokens"]
    text = "".join(output)
    assert text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: {")]
    # A content delta per engine step that produced text (the first chunk only carries the
    # role, with empty content): at least one, at most one per token.
    deltas = sum(1 for c in chunks for choice in c["choices"] if choice["delta"].get("content"))
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage, "no usage chunk, though the request asked for one"
    assert 1 <= deltas <= usage[-1]["completion_tokens"], (deltas, usage[-1])
    return usage[-1]["completion_tokens"]


def test_two_hundred_mixed_jobs_complete_exactly_once_and_memory_settles(endpoint):
    proc = worker(endpoint)
    warm = [post(endpoint, "run", {"input": _load_job(i)[0]}).json()["id"] for i in range(8)]
    for job_id in warm:
        wait_final(endpoint, job_id)
    before = proc.memory_info().rss

    jobs = [_load_job(i) for i in range(200)]
    ended = endpoint.jobs_ended()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        most_running = pool.submit(
            endpoint.most_in_progress, until_done=200, timeout_s=600, since=ended
        )
        ids = list(
            pool.map(lambda job: post(endpoint, "run", {"input": job[0]}).json()["id"], jobs)
        )
        assert len(set(ids)) == 200
        results = [wait_final(endpoint, job_id, timeout_s=600) for job_id in ids]
        # The worker takes as many jobs as MAX_CONCURRENCY allows, and never more.
        assert most_running.result(timeout=60) == 16
    assert [r["status"] for r in results] == ["COMPLETED"] * 200, [
        r for r in results if r["status"] != "COMPLETED"
    ][:2]
    for i, ((job_input, tokens), result) in enumerate(zip(jobs, results, strict=True)):
        assert _completion_tokens(result, job_input) == tokens, (i, job_input)
    log = endpoint.log_text()
    assert all(len(re.findall(rf"job {job_id} completed", log)) == 1 for job_id in ids)

    # Sampled until within the margin: the last jobs' buffers go within moments, a leak never.
    margin = 300 * 2**20  # allocator caches and warmed-up pools; a leak per job would exceed it
    growth = 0

    def settled() -> bool:
        nonlocal growth
        growth = proc.memory_info().rss - before
        return growth < margin

    wait_until(settled, 30, lambda: f"worker RSS to settle; it grew by {growth / 2**20:.0f} MiB")


# --- cancellation storm -------------------------------------------------------------------


def test_cancellation_storm_leaves_the_engine_idle(endpoint):
    long_job = {
        "prompt": "Tell a long story.",
        "stream": True,
        "sampling_params": {"max_tokens": 2000, "ignore_eos": True},
    }
    mark = len(endpoint.log_text())
    ids = [post(endpoint, "run", {"input": long_job}).json()["id"] for _ in range(50)]
    rng = random.Random(7)
    for job_id in rng.sample(ids, len(ids)):
        time.sleep(rng.uniform(0, 0.15))
        assert post(endpoint, f"cancel/{job_id}", None).json()["status"] == "CANCELLED"
    assert all(wait_final(endpoint, job_id)["status"] == "CANCELLED" for job_id in ids)
    # The worker reports what the engine still holds whenever it changes (every second here).
    counts: list[str] = []

    def engine_emptied() -> bool:
        counts[:] = re.findall(r"engine holds (\d+) unfinished", endpoint.log_text()[mark:])
        return bool(counts) and counts[-1] == "0" and any(c != "0" for c in counts)

    wait_until(engine_emptied, 60, lambda: f"an idle engine; it reported {counts[-3:]}", 0.5)
    done = post(
        endpoint,
        "runsync",
        {
            "input": {
                "prompt": "After the storm",
                "sampling_params": {"max_tokens": 5, "ignore_eos": True},
            }
        },
    ).json()
    assert done["status"] == "COMPLETED" and done["output"][0]["usage"]["output"] == 5


# --- logs ----------------------------------------------------------------------------------


def test_one_log_line_per_job_without_text_or_secrets(endpoint):
    job = {
        "prompt": f"Say {SECRET_PROMPT} please",
        "stream": True,
        "sampling_params": {"max_tokens": 8, "ignore_eos": True},
    }
    done = post(endpoint, "runsync", {"input": job}).json()
    assert done["status"] == "COMPLETED", done
    job_id = done["id"]
    line = wait_log(endpoint, rf"job {job_id} completed[^\n]*").group(0)
    prompt_tokens = done["output"][-1]["usage"]["input"]
    assert re.search(
        rf"route=native prompt_tokens={prompt_tokens} output_tokens=8 ttft=\d+ms "
        r"tokens_per_s=[\d.]+ finish=length$",
        line,
    ), line
    openai_done = post(
        endpoint,
        "runsync",
        {
            "input": {
                "openai_route": "/v1/completions",
                "openai_input": {
                    "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                    "prompt": SECRET_PROMPT,
                    "max_tokens": 3,
                    "ignore_eos": True,
                },
            }
        },
    ).json()
    assert openai_done["status"] == "COMPLETED", openai_done
    openai_id = openai_done["id"]
    line = wait_log(endpoint, rf"job {openai_id} completed[^\n]*").group(0)
    prompt_tokens = openai_done["output"][0]["usage"]["prompt_tokens"]
    assert f"route=/v1/completions prompt_tokens={prompt_tokens} output_tokens=3 " in line, line
    assert line.endswith(" finish=length"), line
    chat = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": SECRET_PROMPT}],
        "max_tokens": 3,
        "ignore_eos": True,
        "n": 2,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream_done = post(
        endpoint,
        "runsync",
        {"input": {"openai_route": "/v1/chat/completions", "openai_input": chat}},
    ).json()
    assert stream_done["status"] == "COMPLETED", stream_done
    stream_id = stream_done["id"]
    line = wait_log(endpoint, rf"job {stream_id} completed[^\n]*").group(0)
    assert re.search(
        r"route=/v1/chat/completions prompt_tokens=\d+ output_tokens=6 ttft=\d+ms "
        r"tokens_per_s=[\d.]+ finish=length,length$",
        line,
    ), line
    log = endpoint.log_text()
    for done_id in (job_id, openai_id, stream_id):  # one line per job, whatever its outcome
        assert len(re.findall(rf"job {done_id} \w+ in ", log)) == 1, done_id
    assert SECRET_PROMPT not in log
    assert API_KEY not in log
    assert HF_TOKEN not in log


# --- graceful stop and death (each replaces the worker; the endpoint restarts it) --------


def _start_streaming(endpoint, max_tokens: int) -> str:
    job = {
        "prompt": "Tell a story.",
        "stream": True,
        "sampling_params": {"max_tokens": max_tokens, "ignore_eos": True},
    }
    job_id = post(endpoint, "run", {"input": job}).json()["id"]
    wait_until(
        lambda: status(endpoint, job_id)["status"] != "IN_QUEUE",
        60,
        lambda: f"job {job_id} to start; it is {status(endpoint, job_id)}",
    )
    return job_id


def _exits(endpoint) -> list[int]:
    return [
        int(c)
        for c in re.findall(r"worker exited with code (-?\d+); restarting", endpoint.log_text())
    ]


def _next_exit(endpoint, seen: int, timeout_s: float = 40) -> int:
    """The exit code of the next worker to end, after `seen` earlier ones."""
    codes = wait_until(
        lambda: (found := _exits(endpoint))[seen:] and found, timeout_s, "the worker to exit", 0.2
    )
    return codes[seen]


def test_sigterm_finishes_running_jobs_within_the_grace_period_then_exits_zero(endpoint):
    endpoint.wait_ready()
    seen = len(_exits(endpoint))
    pid = endpoint.worker_pid()
    short = _start_streaming(endpoint, 40)
    long = _start_streaming(endpoint, 5000)
    os.kill(pid, signal.SIGTERM)
    stopped = time.monotonic()
    late = post(
        endpoint, "run", {"input": {"prompt": "late", "sampling_params": {"max_tokens": 2}}}
    ).json()["id"]
    short_result = wait_final(endpoint, short)
    assert short_result["status"] == "COMPLETED", short_result
    # The long job is cancelled in the worker after the grace period; it never reports a
    # result, so it fails when the worker has exited.
    long_result = wait_final(endpoint, long)
    assert long_result["status"] == "FAILED", long_result
    assert "worker process exited with code 0" in long_result["error"], long_result
    assert _next_exit(endpoint, seen) == 0
    assert 4 <= time.monotonic() - stopped < 4 + 20  # SHUTDOWN_GRACE_PERIOD, then the exit
    wait_log(endpoint, rf"job {long} cancelled")
    endpoint.wait_ready()
    late_result = wait_final(endpoint, late)
    assert late_result["status"] == "COMPLETED", late_result


def test_engine_death_fails_running_jobs_and_ends_the_worker(endpoint):
    endpoint.wait_ready()
    seen = len(_exits(endpoint))
    pid = endpoint.worker_pid()
    running = [_start_streaming(endpoint, 3000) for _ in range(3)]
    core = endpoint.engine_core()
    assert core.ppid() == pid, (core, pid)
    killed = time.monotonic()
    core.send_signal(signal.SIGKILL)
    results = [wait_final(endpoint, job_id, timeout_s=60) for job_id in running]
    assert [r["status"] for r in results] == ["FAILED"] * 3, results
    # The worker reports the engine's death on each running job before it exits.
    assert all("engine died" in r["error"] for r in results), results
    assert _next_exit(endpoint, seen) == 1
    assert time.monotonic() - killed < 20
    endpoint.wait_ready()
    done = post(
        endpoint, "runsync", {"input": {"prompt": "Hi", "sampling_params": {"max_tokens": 2}}}
    )
    assert done.json()["status"] == "COMPLETED"
