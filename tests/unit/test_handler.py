"""The handler on fake job kinds: dispatch, errors, cancellation and the log line, no engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from tests.helpers import run_job
from vllm_worker.errors import JobError, JobInputError
from vllm_worker.handler import ENGINE_DEAD, make_handler
from vllm_worker.kinds import JobStats


class Echo:
    """A kind for inputs with `echo`: yields its words, failing on the word `fail`."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.started = asyncio.Event()

    def route(self, job_input: object) -> str | None:
        return "echo" if isinstance(job_input, dict) and "echo" in job_input else None

    async def parse(self, job_input: object) -> list[str]:
        words = job_input["echo"]  # type: ignore[index]
        if not isinstance(words, list):
            raise JobInputError("echo: must be a list")
        return words

    async def run(self, words: list[str], job_id: str, stats: JobStats) -> AsyncIterator[str]:
        stats.prompt_tokens = len(words)
        try:
            for count, word in enumerate(words, 1):
                self.started.set()
                if word == "fail":
                    raise JobError("failed on purpose")
                if word == "dead":
                    from vllm.v1.engine.exceptions import EngineDeadError

                    raise EngineDeadError()
                if word == "wait":
                    await asyncio.Event().wait()
                stats.output_tokens = count
                stats.finish_reasons = ["stop"]
                yield word
        finally:
            self.closed.set()


class CatchAll(Echo):
    def route(self, job_input: object) -> str:
        return "rest"

    async def parse(self, job_input: object) -> list[str]:
        return ["rest"]


@pytest.fixture
def kinds() -> tuple[Echo, CatchAll]:
    return Echo(), CatchAll()


async def test_the_first_kind_that_claims_the_input_runs_it(kinds):
    handler = make_handler(kinds)
    assert await run_job(handler, {"echo": ["a", "b"]}) == ["a", "b"]
    assert await run_job(handler, {"prompt": "x"}) == ["rest"]
    assert await run_job(handler, None) == ["rest"]


async def test_job_errors_become_one_error_item(kinds):
    handler = make_handler(kinds)
    assert await run_job(handler, {"echo": "a"}) == [{"error": "echo: must be a list"}]
    assert await run_job(handler, {"echo": ["a", "fail"]}) == ["a", {"error": "failed on purpose"}]
    assert await run_job(handler, {"echo": ["dead"]}) == [{"error": ENGINE_DEAD}]


async def test_one_log_line_per_job_with_counts_and_no_text(kinds, caplog):
    handler = make_handler(kinds)
    with caplog.at_level(logging.INFO, logger="vllm_worker"):
        await run_job(handler, {"echo": ["secret-word", "other"]}, job_id="j1")
        await run_job(handler, {"echo": ["fail"]}, job_id="j2")
    lines = [r.getMessage() for r in caplog.records if r.name == "vllm_worker.handler"]
    assert len(lines) == 2
    assert lines[0].startswith("job j1 completed in ")
    assert "route=echo prompt_tokens=2 output_tokens=2 ttft=" in lines[0]
    assert lines[0].endswith("finish=stop")
    assert lines[1].startswith("job j2 failed in ")
    assert "output_tokens=- ttft=- tokens_per_s=- finish=-" in lines[1]
    assert "secret-word" not in caplog.text


async def test_cancelling_a_job_closes_its_kind_and_logs_it(kinds, caplog):
    echo = kinds[0]
    handler = make_handler(kinds)
    with caplog.at_level(logging.INFO, logger="vllm_worker"):
        task = asyncio.create_task(run_job(handler, {"echo": ["wait"]}, job_id="j3"))
        await asyncio.wait_for(echo.started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert echo.closed.is_set()
    assert "job j3 cancelled in " in caplog.text


async def test_closing_the_stream_early_closes_the_kind(kinds):
    echo = kinds[0]
    stream = make_handler(kinds)({"id": "j4", "input": {"echo": ["a", "wait"]}})
    assert await anext(stream) == "a"
    await stream.aclose()
    assert echo.closed.is_set()
