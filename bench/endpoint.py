"""Endpoint phases: the full path, client -> local endpoint -> worker (SDK platform mode) -> engine.

Starts `python -m vllm_worker.local` as `make run` does, times its cold start from the worker's
own log lines, and drives three paths against it: `/run` + `/stream` (native, streaming),
`/runsync` (native, not streaming) and the OpenAI client streaming from `/openai/v1`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import aiohttp
import httpx
import psutil

from bench.common import (
    MESSAGES,
    Workload,
    engine_processes,
    native_input,
    run_phases,
    sampling_params,
)

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
#: The worker's start-up lines (src/vllm_worker/__main__.py), with their log timestamps.
_LOG_LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO vllm_worker: "
    r"(?:settings read in (?P<settings>[\d.]+)s|engine ready in [\d.]+s|ready for jobs)",
    re.MULTILINE,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalEndpoint:
    """A `python -m vllm_worker.local` process, its worker and the worker's engine core."""

    def __init__(self, workload: Workload, log: Path) -> None:
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}/v2/local"
        self.log = log
        env = {**os.environ, **workload.env(), "PORT": str(port)}
        for var in ("RUNPOD_API_KEY", "ENDPOINT_ID", "HOST"):  # loopback, no key, any id
            env.pop(var, None)
        if not workload.model:
            env.pop("MODEL_NAME", None)
        self.spawned = time.time()
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "vllm_worker.local"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = 600) -> float:
        """Wait until the worker polls for jobs; return that moment (epoch seconds)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the local endpoint exited; see {self.log}")
            try:
                health = httpx.get(f"{self.url}/health", timeout=5).json()
                if health["workers"]["idle"] >= 1:
                    return time.time()
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the worker was not ready after {timeout_s:.0f}s; see {self.log}")

    def processes(self) -> dict[str, list[psutil.Process]]:
        endpoint = psutil.Process(self.process.pid)
        (worker,) = (p for p in endpoint.children() if "vllm_worker" in " ".join(p.cmdline()))
        return {"worker": [worker], "engine": engine_processes(worker), "endpoint": [endpoint]}

    def cold_start(self, ready: float) -> dict[str, float]:
        """Where the time from spawning the endpoint to the worker's first job poll went."""
        stamps, settings_s = [], 0.0
        for match in _LOG_LINE.finditer(self.log.read_text()):
            at = datetime.strptime(match["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            stamps.append(at)
            settings_s = float(match["settings"] or settings_s)
        settings_at, engine_at, ready_at = stamps
        worker_created = self.processes()["worker"][0].create_time()
        return {
            "endpoint start, until the worker process exists": worker_created - self.spawned,
            "worker: Python start until main()": settings_at - settings_s - worker_created,
            "worker: settings (imports vLLM, parses config)": settings_s,
            "worker: engine start": engine_at - settings_at,
            "worker: own set-up (engine watch, import runpod)": ready_at - engine_at,
            "worker: SDK start until its first job poll": ready - ready_at,
            "total, until the worker takes jobs": ready - self.spawned,
        }

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


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
            # A chunk per engine step, usually one token; the first carries only the role.
            if chunk.choices and chunk.choices[0].delta.role is None:
                counted += 1
                yield 1
            elif chunk.usage:  # the last chunk: steps that carried several tokens
                yield chunk.usage.completion_tokens - counted

    return {
        "endpoint-stream": run_stream,
        "endpoint-runsync": runsync,
        "endpoint-openai": openai_stream,
    }


async def _phases(endpoint: LocalEndpoint, workload: Workload, log: Callable) -> list[dict]:
    from openai import AsyncOpenAI

    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(600)) as client,
        AsyncOpenAI(base_url=f"{endpoint.url}/openai/v1", api_key="local", timeout=600) as openai,
    ):
        served = (await openai.models.list()).data[0].id
        paths = make_paths(client, openai, endpoint.url, served)
        me = psutil.Process()
        processes = {**endpoint.processes(), "client": [me]}
        return await run_phases(workload, paths, processes, me, log)


def run(workload: Workload, log_file: Path, log: Callable[[str], None]) -> dict:
    """Start the endpoint, time its cold start, run the endpoint phases, stop it."""
    endpoint = LocalEndpoint(workload, log_file)
    try:
        ready = endpoint.wait_ready()
        cold = endpoint.cold_start(ready)
        log(f"worker ready {cold['total, until the worker takes jobs']:.1f}s after start")
        results = asyncio.run(_phases(endpoint, workload, log))
    finally:
        endpoint.stop()
    return {"results": results, "cold_start": cold}
