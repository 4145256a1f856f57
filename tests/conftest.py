"""One real engine on the default model, shared by the whole session to keep the suite fast."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import settings

from vllm_worker.config import Config, load

# CI runs the same examples every time (a failure there is reproducible); locally each run
# explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def config() -> Config:
    return load({})


@pytest.fixture(scope="session")
async def engine(config):
    from vllm_worker.engine import start_engine

    engine = start_engine(config)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def handler(engine, config):
    from vllm_worker.handler import make_handler

    return make_handler(engine, config)


@pytest.fixture(scope="session")
def tokenizer(engine):
    return engine.get_tokenizer()


async def run_job(handler, job_input: object, job_id: str = "test") -> list[dict]:
    """Every item the handler yields for one job."""
    return [item async for item in handler({"id": job_id, "input": job_input})]


def text_of(items: list[dict], choice: int = 0) -> str:
    return "".join(piece for item in items for piece in item["choices"][choice]["tokens"])


@pytest.fixture(scope="session")
def local_endpoint(tmp_path_factory):
    """The local endpoint with a real worker (its own engine), key required, 8 jobs at once."""
    from tests.local_endpoint import LocalEndpoint

    endpoint = LocalEndpoint(tmp_path_factory.mktemp("local") / "endpoint.log", MAX_CONCURRENCY="8")
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()


async def wait_idle(engine, timeout_s: float = 5.0) -> None:
    """Wait until the engine holds no request (an aborted one leaves within moments)."""
    for _ in range(int(timeout_s / 0.05)):
        if engine.get_num_unfinished_requests() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engine still has unfinished requests")


async def cancel_mid_request(engine, job) -> None:
    """Run the `job` coroutine until its request is in the engine, cancel it, and check that
    the cancellation reached the engine."""
    task = asyncio.create_task(job)
    for _ in range(200):
        if engine.get_num_unfinished_requests():
            break
        await asyncio.sleep(0.02)
    assert engine.get_num_unfinished_requests() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(engine)
