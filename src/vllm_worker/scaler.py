"""The runpod SDK's job loop (`JobScaler`), without its polling waits and with a bounded stop.

runpod 1.10.0's loop takes jobs and starts them on timers: `run_jobs` looks at its queue every
0.1 s, and `get_jobs` counts a queued job twice (queue and progress list), so a worker that is
far from full sleeps a whole second before taking more. It also rewrites its progress file
(the job ids its heartbeat process reports) on the event loop at every job start and end, and
reads it back at every job poll: file I/O that, under load, stalls the loop for milliseconds
(about 40 % of the worker's busy time in a profile at 16 concurrent jobs). Each stall lands on
time to first token and throughput. This subclass keeps the SDK's protocol code (job fetch,
handler call, streaming, results, stop signals) and replaces only the waits and the file work:
a job starts as soon as it is queued, the loop asks for more as soon as a slot frees, and the
progress file is written from a snapshot in a background thread, at most every
`PROGRESS_SAVE_INTERVAL_S`; in this process the in-memory list is the truth, so it is not
read back.

On SIGTERM the SDK stops taking jobs but then waits for the running ones without a limit,
while the platform kills a container that does not exit in time; here running jobs get
`SHUTDOWN_GRACE_PERIOD` seconds, then are cancelled (each aborts its vLLM request), so the
worker exits 0 on its own.

It depends on the SDK's internals, so `install` refuses any other runpod version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import pickle
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import aiohttp
import runpod
import uvloop
from filelock import FileLock
from runpod.http_client import AsyncClientSession
from runpod.serverless.modules import rp_scale

from vllm_worker import trace

logger = logging.getLogger(__name__)

#: The runpod version whose JobScaler internals this module was written against.
SDK_VERSION = "1.10.0"
#: The heartbeat reads the progress file every RUNPOD_PING_INTERVAL (10 s by default).
PROGRESS_SAVE_INTERVAL_S = 0.5


class JobScaler(rp_scale.JobScaler):
    #: Set by `install`: seconds running jobs get after SIGTERM before they are cancelled.
    grace_s: float = 30.0
    # Set by the SDK's __init__ (typed here: the SDK has no annotations).
    current_concurrency: int
    jobs_queue: asyncio.Queue[dict[str, Any]]
    #: Set by `install`: awaited on the job loop before the first job is taken.
    on_start: ClassVar[Callable[[], Awaitable[None]] | None] = None

    def __init__(self, config: dict) -> None:
        if trace.ENABLED:
            trace.start("worker")
            config = {**config, "handler": trace.traced_handler(config["handler"])}
        super().__init__(config)
        # The worker's concurrency is fixed: size the queue once, here, so `set_scale` never
        # swaps it for a new one while `run_jobs` waits on it.
        self.current_concurrency = self.concurrency_modifier(self.current_concurrency)
        self.jobs_queue = asyncio.Queue(maxsize=self.current_concurrency)
        self._slot_freed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._taking: asyncio.Task | None = None  # the SDK's get_jobs loop
        # Instance attributes shadow the SDK's methods on its progress list (a singleton the
        # heartbeat process, forked earlier, does not share).
        self.job_progress._save_state = self._save_progress_soon
        self.job_progress._load_state = lambda: None
        self._progress_writer = concurrent.futures.ThreadPoolExecutor(1, "progress-file")
        self._progress_save_due = False

    async def run(self) -> None:
        """The SDK's three loops. On stop, jobs run until the job poll in flight has returned
        and whatever it brought has run (cancelling that poll could lose jobs the server just
        handed out); stop signals are heard until the last job ends."""
        self._loop = asyncio.get_running_loop()
        if (on_start := type(self).on_start) is not None:  # a plain function, not a method
            await on_start()
        traces = [_post_trace()] if trace.ENABLED else []
        async with AsyncClientSession(trace_configs=traces) as session:
            self._taking = asyncio.create_task(self.get_jobs(session))
            stopping = asyncio.create_task(self.monitor_stop_signals(session))
            await self.run_jobs(session)
            stopping.cancel()
            await asyncio.gather(self._taking, stopping, return_exceptions=True)

    def _save_progress_soon(self) -> None:
        if self._progress_save_due or self._loop is None:
            return
        self._progress_save_due = True
        self._loop.call_later(PROGRESS_SAVE_INTERVAL_S, self._save_progress)

    def _save_progress(self) -> None:
        self._progress_save_due = False
        snapshot = set(self.job_progress)
        self._progress_writer.submit(_write_progress, snapshot, self.job_progress._STATE_FILE)

    def current_occupancy(self) -> int:
        """Jobs taken and not finished; the progress list holds queued jobs too."""
        return self.job_progress.get_job_count()

    async def set_scale(self) -> None:
        """Called by `get_jobs` before it asks for jobs: also wait here until a slot is free,
        so `get_jobs` never finds the worker full and sleeps its fixed second."""
        await super().set_scale()
        while self.is_alive() and self.current_occupancy() >= self.current_concurrency:
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout=1.0)

    async def run_jobs(self, session: AsyncClientSession) -> None:
        """Start each queued job at once: wait on the queue and the running jobs together."""
        taking = self._taking
        if taking is None:
            raise RuntimeError("run_jobs runs inside run, once the job poll has started")
        running: set[asyncio.Task] = set()
        take: asyncio.Task | None = None
        while not (taking.done() and self.jobs_queue.empty()):
            if take is None and len(running) < self.current_concurrency:
                take = asyncio.ensure_future(self.jobs_queue.get())
            waiting = running | {t for t in (take, taking) if t is not None and not t.done()}
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if take is not None and take.done():
                job = take.result()
                take = None
                task = asyncio.create_task(self.handle_job(session, job))
                running.add(task)
                self.jobs_tasks[job["id"]] = task
            running -= done
        if take is not None:
            take.cancel()
        for result in await asyncio.gather(*running, return_exceptions=True):
            if isinstance(result, Exception):
                logger.error("job failed while the worker stopped: %r", result)

    async def handle_job(self, session: AsyncClientSession, job: dict) -> None:
        try:
            await super().handle_job(session, job)
        finally:
            self._slot_freed.set()

    def kill_worker(self) -> None:
        """The SDK's SIGTERM handler: stop taking jobs, and bound the wait for running ones."""
        if self.is_alive() and self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_grace_period, self._loop)
        super().kill_worker()

    def _start_grace_period(self, loop: asyncio.AbstractEventLoop) -> None:
        logger.info(
            "stopping: %d running job(s) get %.0f s to finish", len(self.jobs_tasks), self.grace_s
        )
        loop.call_later(self.grace_s, self._cancel_running)

    def _cancel_running(self) -> None:
        left = [task for task in self.jobs_tasks.values() if not task.done()]
        if left:
            logger.warning("grace period over: cancelling %d job(s)", len(left))
        for task in left:
            task.cancel()


def _post_trace() -> aiohttp.TraceConfig:
    """Marks when the SDK starts each POST of a streamed item or result, when its body is
    written to the socket, and when the endpoint's answer is back."""
    config = aiohttp.TraceConfig()

    def marker(hop: str) -> Callable[..., Awaitable[None]]:
        async def on(session: object, context: object, params: Any) -> None:
            parts = params.url.path.split("/")
            if params.method == "POST" and len(parts) > 2:
                trace.mark(hop, parts[-1], kind=parts[-3])  # .../job-stream/<worker>/<job>

        return on

    config.on_request_start.append(marker("post"))
    config.on_request_chunk_sent.append(marker("post_sent"))
    config.on_request_end.append(marker("post_answered"))
    return config


def _write_progress(jobs: set, path: str) -> None:
    """The SDK's progress file as its heartbeat reads it: a pickled set of jobs, replaced
    atomically under the SDK's file lock."""
    try:
        with FileLock(path + ".lock"):
            with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), delete=False) as out:
                pickle.dump(jobs, out)
            os.replace(out.name, path)
    except OSError as error:
        logger.error("could not write the SDK's progress file: %s", error)


def install(grace_s: float, on_start: Callable[[], Awaitable[None]] | None = None) -> None:
    """Make `runpod.serverless.start` use this JobScaler, on uvloop as `vllm serve` runs;
    `on_start` runs on its loop before the first job, and what it raises ends `start`."""
    if runpod.__version__ != SDK_VERSION:
        raise RuntimeError(
            f"vllm_worker.scaler is written for runpod {SDK_VERSION}, found {runpod.__version__}"
        )
    JobScaler.grace_s = grace_s
    JobScaler.on_start = on_start
    rp_scale.JobScaler = JobScaler
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
