"""`python -m vllm_worker.local`: the worker behind a local RunPod endpoint (what `make run` runs).

Serves RunPod's public API on HOST:PORT and runs the worker in the SDK's platform mode
against it, so every documented request works unchanged against localhost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import sys
from collections.abc import AsyncIterator
from types import FrameType

import uvicorn

from vllm_worker import failed_worker, logs, trace
from vllm_worker.config import ConfigError
from vllm_worker.local.app import build_app
from vllm_worker.local.settings import LocalEndpointSettings
from vllm_worker.local.store import JobStore
from vllm_worker.local.supervisor import WorkerProcess

logger = logging.getLogger("vllm_worker.local")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _self_url(host: str, port: int) -> str:
    """The URL the worker uses to reach this endpoint on the same machine."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _sweep(store: JobStore) -> None:
    while True:
        await asyncio.sleep(1)
        store.sweep()


async def _announce(
    store: JobStore, worker: WorkerProcess, url: str, endpoint: str, keyed: bool
) -> None:
    """Tell the user how to call the endpoint once the worker asks for its first job, or, if
    it could not start, why, where nobody can miss it."""
    while not store.workers_seen:
        await asyncio.sleep(0.5)
    if (failure := worker.start_up_failure()) is not None:
        rule = "=" * 78
        logger.error(
            "\n%s\nTHE WORKER CANNOT START: %s\nEvery job fails with this message until the "
            "setting is changed and `make run` started again.\n%s",
            rule,
            failure,
            rule,
        )
        return
    auth = " -H 'Authorization: Bearer $RUNPOD_API_KEY'" if keyed else ""
    logger.info(
        "worker ready. Try:\n  curl -s %s/v2/%s/runsync -H 'Content-Type: application/json'%s "
        '-d \'{"input": {"prompt": "The capital city of France is", '
        '"sampling_params": {"temperature": 0, "max_tokens": 20}}}\'\n'
        "  OpenAI base URL: %s/v2/%s/openai/v1",
        url,
        endpoint,
        auth,
        url,
        endpoint,
    )


class _Server(uvicorn.Server):
    """Stops the worker before the server on SIGINT or SIGTERM.

    The worker long-polls this server; closed first, it would leave the worker retrying a
    refused connection (an error line each time) until its own stop. A second signal stops
    the server at once, as uvicorn does.
    """

    def __init__(self, config: uvicorn.Config, worker: WorkerProcess) -> None:
        super().__init__(config)
        self._worker = worker
        self._stopping: concurrent.futures.Future[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping is not None or self.should_exit:
            return super().handle_exit(sig, frame)
        logger.info("stopping: the worker first, then the endpoint")
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.run_coroutine_threadsafe(self._stop_worker_first(), loop)

    async def _stop_worker_first(self) -> None:
        await self._worker.stop()
        self.should_exit = True


async def serve(settings: LocalEndpointSettings, shutdown_grace_s: float) -> int:
    """Run the endpoint and its worker; the exit code is non-zero when the worker died.

    `shutdown_grace_s` is the worker's SHUTDOWN_GRACE_PERIOD: a stopping worker gets that long
    and a margin before it is killed.
    """
    store = JobStore()
    url = _self_url(settings.host, settings.port)
    key = settings.runpod_api_key.get_secret_value() if settings.runpod_api_key else None
    exit_code = 0

    def on_worker_exit(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    worker = WorkerProcess(
        store, url, settings.restart_worker, on_worker_exit, shutdown_grace_s=shutdown_grace_s
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        # Stop the worker here, not after `server.serve()`: on a signal uvicorn re-raises it
        # once serving ends, so code after serve() never runs and the worker would be orphaned.
        background = (
            worker.run(),
            _sweep(store),
            _announce(store, worker, url, endpoint, bool(key)),
        )
        tasks = [asyncio.create_task(coroutine) for coroutine in background]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await worker.stop()

    endpoint = settings.endpoint_id or "local"
    app = build_app(
        store,
        lambda: worker.alive,
        api_key=key,
        worker_token=worker.token,
        execution_timeout_s=settings.execution_timeout,
        max_body_bytes=settings.max_request_bytes,
        endpoint_id=settings.endpoint_id,
        lifespan=lifespan,
        worker_failure=worker.start_up_failure,
    )
    if trace.ENABLED:
        trace.start("endpoint")
        app = trace.asgi(app)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False
    )
    server = _Server(config, worker)
    await server.serve()
    return exit_code


def main() -> None:
    logs.setup()
    try:
        settings = LocalEndpointSettings.from_env(os.environ)
    except ConfigError as error:
        print(f"local endpoint: invalid setting: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.runpod_api_key is None and not _loopback(settings.host):
        print(
            f"local endpoint: refusing to listen on {settings.host} without RUNPOD_API_KEY: "
            "set a key, or keep HOST on a loopback address",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:
        # A wrong worker setting is the worker's to report (every job fails with it).
        grace_s = failed_worker.settings(os.environ).shutdown_grace_period
        code = asyncio.run(serve(settings, grace_s))
    except KeyboardInterrupt:  # a second Ctrl-C, re-raised by uvicorn once it stopped
        code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()
