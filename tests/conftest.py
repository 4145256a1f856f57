"""One real engine on the default model, shared by the whole session to keep the suite fast."""

from __future__ import annotations

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
