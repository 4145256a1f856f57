"""The worker process's stop, on a stand-in worker (no engine)."""

from __future__ import annotations

import asyncio
import sys

from tests.helpers import until
from vllm_worker.failed_worker import FAILURE_FILE_VAR
from vllm_worker.local.store import JobStore
from vllm_worker.local.supervisor import STOP_MARGIN_S, WorkerProcess

#: Takes a second to finish after SIGTERM, then exits 0, like a worker in its grace period.
SLOW_STOP = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1), sys.exit(0)))
pathlib.Path(sys.argv[1]).touch()
time.sleep(60)
"""


async def test_a_stopping_worker_gets_its_grace_period_and_a_margin(tmp_path):
    ready = tmp_path / "ready"
    exits: list[int] = []
    worker = WorkerProcess(
        JobStore(),
        "http://127.0.0.1:9",
        restart=False,
        on_exit=exits.append,
        command=[sys.executable, "-c", SLOW_STOP, str(ready)],
        shutdown_grace_s=0.5,
    )
    assert worker.stop_timeout_s == 0.5 + STOP_MARGIN_S
    running = asyncio.create_task(worker.run())
    await until(ready.exists, 30, "the stand-in worker should start")
    async with asyncio.timeout(30):
        await worker.stop()
        await running
    assert worker.process is not None and worker.process.returncode == 0  # not killed
    assert exits == []  # a deliberate stop is not a death


#: Writes a start-up failure where `failed_worker.report` does, then waits to be stopped.
FAILED_START = """
import os, pathlib, sys, time
pathlib.Path(os.environ["WORKER_START_UP_FAILURE_FILE"]).write_text(sys.argv[1])
time.sleep(60)
"""


async def test_a_workers_start_up_failure_is_read_while_it_runs():
    assert FAILURE_FILE_VAR in FAILED_START
    worker = WorkerProcess(
        JobStore(),
        "http://127.0.0.1:9",
        restart=False,
        on_exit=lambda code: None,
        command=[sys.executable, "-c", FAILED_START, "X=1 is wrong."],
        shutdown_grace_s=0.5,
    )
    assert worker.start_up_failure() is None  # not started
    running = asyncio.create_task(worker.run())
    await until(lambda: worker.start_up_failure() is not None, 60, "the failure to be read")
    assert worker.start_up_failure() == "X=1 is wrong."
    async with asyncio.timeout(30):
        await worker.stop()
        await running
    assert worker.start_up_failure() is None  # a stopped worker fails no job
