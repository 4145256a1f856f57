"""Helpers the tests share: running a job through a handler, reading its items, waiting on the
engine with a deadline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from vllm_worker import default_model
from vllm_worker.batching import BatchPolicy
from vllm_worker.config import Config, WorkerSettings

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

    from vllm_worker.worker import Worker


def default_model_folder() -> Path:
    """The default model's folder, prepared on first use in this machine's worker cache."""
    cache = WorkerSettings.from_env(os.environ).cache_dir(os.environ.get("XDG_CACHE_HOME"))
    return default_model.ensure_default_model(cache)


def handler_with(engine: AsyncLLM, config: Config, **settings: Any) -> Callable:
    """A second worker's handler on the same engine, with other worker settings."""
    import dataclasses

    from vllm_worker import worker

    changed = config.worker.model_copy(update=settings)
    return worker.build(engine, dataclasses.replace(config, worker=changed)).handler


def worker_with_flags(engine: AsyncLLM, config: Config, **flags: Any) -> Worker:
    """A second worker on the same engine whose serving layer has other `vllm serve` flags
    (`chat_template=...`, `tool_call_parser=...`): the flags the OpenAI layer reads, not the
    engine's."""
    import argparse
    import dataclasses

    from vllm_worker import worker

    args = argparse.Namespace(**{**vars(config.vllm_args), **flags})
    return worker.build(engine, dataclasses.replace(config, vllm_args=args))


async def run_job(
    handler: Callable, job_input: object, job_id: str = "test", timeout_s: float = 600
) -> list[Any]:
    """Every item the handler yields for one job; fails after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        return [item async for item in handler({"id": job_id, "input": job_input})]


def keeps_batch_promise(sizes: list[int], policy: BatchPolicy) -> bool:
    """The README's promise for streamed batches: each but the last holds at least the
    policy's next size (more only when the engine delivered several tokens at once); none is
    empty."""
    targets = islice(policy.sizes(), len(sizes) - 1)
    return (
        bool(sizes)
        and min(sizes) > 0
        and all(size >= target for size, target in zip(sizes[:-1], targets, strict=True))
    )


def text_of(items: list[dict], choice: int = 0) -> str:
    """The text of one choice over all native items."""
    return "".join(piece for item in items for piece in item["choices"][choice]["tokens"])


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Return once `condition()` holds; fail the test naming `what` after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        await asyncio.sleep(0.02)


async def wait_idle(engine: AsyncLLM, timeout_s: float = 5.0) -> None:
    """Wait until the engine holds no request (an aborted one leaves within moments)."""
    await until(
        lambda: engine.get_num_unfinished_requests() == 0,
        timeout_s,
        "the engine should hold no request",
    )


async def cancel_mid_request(engine: AsyncLLM, job: Awaitable[object], requests: int = 1) -> None:
    """Run the `job` coroutine until `requests` requests are in the engine, cancel it, and
    check that the cancellation reached the engine."""
    task = asyncio.ensure_future(job)
    await until(
        lambda: engine.get_num_unfinished_requests() >= requests or task.done(),
        10,
        "the job's request should reach the engine",
    )
    assert not task.done(), "the job ended before it could be cancelled"
    assert engine.get_num_unfinished_requests() == requests
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_idle(engine)
