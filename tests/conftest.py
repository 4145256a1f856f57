"""One real engine on the default model, shared by the whole session to keep the suite fast.

Tests under `tests/engine/` drive that engine (or a worker process with its own) and are
marked `engine`; the others are pure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from vllm_worker import model
from vllm_worker.config import Config, load

# CI runs the same examples every time (a failure there is reproducible); locally each run
# explores new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

_ENGINE_TESTS = Path(__file__).parent / "engine"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _ENGINE_TESTS in Path(item.fspath).parents:
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[str]:
    """The URL (for HF_ENDPOINT) of a fake Hugging Face Hub on loopback (`tests.fake_hub`)."""
    from tests.fake_hub import FakeHub

    with FakeHub() as hub:
        yield hub.url


@pytest.fixture(scope="session")
def config() -> Config:
    """vLLM's defaults on the default model, whatever vLLM variables this shell sets."""
    return model.prepare(load({"WORKER_CACHE_DIR": os.environ.get("WORKER_CACHE_DIR", "")}))


@pytest.fixture(scope="session")
async def engine(config):
    from vllm_worker.engine import start_engine

    engine = start_engine(config)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
async def worker(engine, config):
    from vllm_worker import worker

    built = worker.build(engine, config)
    await built.serving.state()
    return built


@pytest.fixture(scope="session")
def handler(worker):
    return worker.handler


@pytest.fixture(scope="session")
def tokenizer(engine):
    return engine.get_tokenizer()


@pytest.fixture(scope="session")
def local_endpoint(tmp_path_factory):
    """The local endpoint with a real worker (its own engine), key required, 8 jobs at once."""
    from vllm_worker.local.testing import LocalEndpoint

    endpoint = LocalEndpoint(tmp_path_factory.mktemp("local") / "endpoint.log", MAX_CONCURRENCY="8")
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()
