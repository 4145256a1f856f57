"""Endpoint phases: the full path, client -> local endpoint -> worker (SDK platform mode) -> engine.

Starts `python -m vllm_worker.local` as `make run` does, with the tests' harness
(`vllm_worker.local.testing`), times its cold start from the worker's own log lines, and drives
three paths against it: `/run` + `/stream` (native, streaming), `/runsync` (native, not
streaming) and the OpenAI client streaming from `/openai/v1`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil

from bench.common import (
    MESSAGES,
    Workload,
    engine_processes,
    native_input,
    run_phases,
    sampling_params,
)
from vllm_worker.local.testing import LocalEndpoint

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
#: The worker's start-up lines (src/vllm_worker/__main__.py), with their log timestamps.
_LOG_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO vllm_worker: "
    r"(?:settings read in (?P<settings>[\d.]+)s|engine ready in [\d.]+s|ready for jobs)",
    re.MULTILINE,
)


def start(workload: Workload, log: Path) -> LocalEndpoint:
    """`python -m vllm_worker.local` on the workload's model (the default one when it names
    none), without a key, on loopback, accepting any endpoint id."""
    return LocalEndpoint(log, api_key=None, MODEL_NAME=workload.model or None)


def processes(endpoint: LocalEndpoint) -> dict[str, list[psutil.Process]]:
    """The endpoint's processes by role: its worker, the worker's engine core, itself."""
    worker = endpoint.worker()
    endpoint_process = psutil.Process(endpoint.process.pid)
    return {"worker": [worker], "engine": engine_processes(worker), "endpoint": [endpoint_process]}


def cold_start(endpoint: LocalEndpoint, ready: float) -> dict[str, float]:
    """Where the time from spawning the endpoint to the worker's first job poll went."""
    stamps, settings_s = [], 0.0
    for match in _LOG_LINE.finditer(endpoint.log_text()):
        at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        stamps.append(at)
        settings_s = float(match["settings"] or settings_s)
    settings_at, engine_at, ready_at = stamps
    worker_created = endpoint.worker().create_time()
    return {
        "endpoint start, until the worker process exists": worker_created - endpoint.spawned,
        "worker: Python start until main()": settings_at - settings_s - worker_created,
        "worker: settings (imports vLLM, parses config)": settings_s,
        "worker: engine start": engine_at - settings_at,
        "worker: own set-up (engine watch, import runpod)": ready_at - engine_at,
        "worker: SDK start until its first job poll": ready - ready_at,
        "total, until the worker takes jobs": ready - endpoint.spawned,
    }


def make_paths(client: aiohttp.ClientSession, openai, url: str, served_model: str) -> dict:
    """The three endpoint paths, keyed by the names the report uses.

    The native paths use aiohttp, the lightest client at hand: the client shares the
    machine's two cores with the endpoint, the worker and the engine.
    """

    async def post(route: str, body: dict) -> dict:
        async with client.post(f"{url}/{route}", json=body) as response:
            return await response.json()

    async def run_stream(index: int, max_tokens: int):
        job = await post("run", {"input": native_input(True, max_tokens)})
        job_id, seen = job["id"], 0
        while True:
            async with client.get(f"{url}/stream/{job_id}") as response:
                body = await response.json()
            if body["stream"]:
                total = body["stream"][-1]["output"]["usage"]["output"]
                new, seen = total - seen, total
                yield new
            if body["status"] in FINAL:
                if body["status"] != "COMPLETED":
                    raise RuntimeError(f"job {job_id}: {body}")
                return

    async def runsync(index: int, max_tokens: int):
        result = await post("runsync", {"input": native_input(False, max_tokens)})
        if result["status"] != "COMPLETED":
            raise RuntimeError(f"runsync: {result}")
        yield result["output"][-1]["usage"]["output"]

    return {
        "endpoint-stream": run_stream,
        "endpoint-runsync": runsync,
        "endpoint-openai": openai_path(openai, served_model),
    }


def openai_path(openai, served_model: str):
    """Streaming chat completions through an `openai.AsyncOpenAI` client, at any server."""

    async def openai_stream(index: int, max_tokens: int):
        params = sampling_params(max_tokens)
        stream = await openai.chat.completions.create(
            model=served_model,
            messages=MESSAGES,
            max_tokens=max_tokens,
            temperature=params["temperature"],
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": params["ignore_eos"]},
        )
        counted = 0
        async for chunk in stream:
            # A chunk per engine step (vLLM's server) or per batch of steps (the worker), counted
            # as one token until the usage chunk; the first chunk carries only the role.
            if chunk.choices and chunk.choices[0].delta.content:
                counted += 1
                yield 1
            elif chunk.usage:  # the last chunk: steps that carried several tokens
                yield chunk.usage.completion_tokens - counted

    return openai_stream


async def _phases(endpoint: LocalEndpoint, workload: Workload, log: Callable) -> list[dict]:
    from openai import AsyncOpenAI

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(600)) as client,
        AsyncOpenAI(base_url=f"{endpoint.url}/openai/v1", api_key="local", timeout=600) as openai,
    ):
        served = (await openai.models.list()).data[0].id
        paths = make_paths(client, openai, endpoint.url, served)
        me = psutil.Process()
        watched = {**processes(endpoint), "client": [me]}
        return await run_phases(workload, paths, watched, me, log)


def run(workload: Workload, log_file: Path, log: Callable[[str], None]) -> dict:
    """Start the endpoint, time its cold start, run the endpoint phases, stop it."""
    endpoint = start(workload, log_file)
    try:
        ready = endpoint.wait_ready(timeout_s=600)
        cold = cold_start(endpoint, ready)
        log(f"worker ready {cold['total, until the worker takes jobs']:.1f}s after start")
        results = asyncio.run(_phases(endpoint, workload, log))
    finally:
        endpoint.stop()
    return {"results": results, "cold_start": cold}
