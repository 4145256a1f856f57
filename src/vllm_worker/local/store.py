"""The local endpoint's job queue and results, with RunPod's job life cycle.

IN_QUEUE -> IN_PROGRESS -> COMPLETED | FAILED | CANCELLED | TIMED_OUT, and IN_QUEUE -> TIMED_OUT
when a job's ttl passes before a worker takes it (RunPod's job states: a job "expires before a
worker picks it up"). Everything runs on the endpoint's single event loop, so plain data
structures need no locks. Memory stays bounded: finished jobs are dropped after a retention
time and beyond a maximum count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import enum
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

#: RunPod's default job ttl: 24 hours.
DEFAULT_TTL_S = 24 * 3600.0


class Status(enum.StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def final(self) -> bool:
        return self not in (Status.IN_QUEUE, Status.IN_PROGRESS)


@dataclasses.dataclass(eq=False)
class Job:
    """One request: its input, where it is in its life cycle, and what it produced."""

    id: str
    input: Any
    timeout_s: float  # execution time limit (the request's policy.executionTimeout)
    retention_s: float  # how long the result is kept once finished
    ttl_s: float = DEFAULT_TTL_S  # how long it may wait in the queue (policy.ttl)
    created: float = dataclasses.field(default_factory=lambda: time.monotonic())  # queued at
    status: Status = Status.IN_QUEUE
    started: float | None = None
    finished: float | None = None
    worker_id: str | None = None
    items: list[Any] = dataclasses.field(default_factory=list)  # streamed outputs
    delivered: int = 0  # items already returned by /stream
    output: Any = None
    error: str | None = None
    _changed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event, repr=False)

    def touch(self) -> None:
        """Wake everyone waiting for news of this job."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        """Return on the next change of this job, or after `timeout_s`."""
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)

    def expired(self, now: float) -> bool:
        """Still queued past its ttl: it must never run."""
        return self.status is Status.IN_QUEUE and now - self.created > self.ttl_s

    def view(self) -> dict[str, Any]:
        """The job as `/status` shows it."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
        if self.finished is not None and self.started is not None:
            body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.status is Status.COMPLETED and self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class JobStore:
    """The queue of one local endpoint, shared by its public API and its workers."""

    def __init__(self, max_finished: int = 1000) -> None:
        self.jobs: dict[str, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._queued = asyncio.Event()
        self._finished: collections.deque[Job] = collections.deque()
        self._max_finished = max_finished
        self._stops: dict[str, set[str]] = collections.defaultdict(set)
        self._stop_signal: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.counts: collections.Counter[str] = collections.Counter()  # completed, failed, retried
        self.workers_seen: dict[str, float] = {}
        self._retired: set[str] = set()

    # --- public side -------------------------------------------------------------------

    def submit(
        self, job_input: Any, timeout_s: float, retention_s: float, ttl_s: float = DEFAULT_TTL_S
    ) -> Job:
        job = Job(
            id=f"local-{uuid.uuid4()}",
            input=job_input,
            timeout_s=timeout_s,
            retention_s=retention_s,
            ttl_s=ttl_s,
        )
        self.jobs[job.id] = job
        self._queue.append(job)
        self._queued.set()
        return job

    def cancel(self, job: Job) -> None:
        self._end(job, Status.CANCELLED)

    def retry(self, job: Job) -> bool:
        """Queue a FAILED or TIMED_OUT job again, its previous output and error dropped (as
        RunPod's `/retry` does); False for a job in any other state. Its ttl and delay count
        from the retry: counted from the first submission, an expired job could never rerun."""
        if job.status not in (Status.FAILED, Status.TIMED_OUT):
            return False
        self._finished = collections.deque(j for j in self._finished if j is not job)
        job.status, job.started, job.finished, job.worker_id = Status.IN_QUEUE, None, None, None
        job.created = time.monotonic()
        job.items, job.delivered, job.output, job.error = [], 0, None, None
        self.counts["retried"] += 1
        self._queue.append(job)
        self._queued.set()
        job.touch()
        return True

    def purge_queue(self) -> int:
        """Drop every job still waiting; running jobs go on."""
        removed = list(self._queue)
        for job in removed:
            self._end(job, Status.CANCELLED)
        return len(removed)

    def health(self, worker_alive: bool, start_up_failure: str | None = None) -> dict[str, Any]:
        """RunPod's `/health` counts; `workers.startUpFailure` (only when there is one) is the
        sentence every job fails with because the worker could not start."""
        running = {j.worker_id for j in self.jobs.values() if j.status is Status.IN_PROGRESS}
        busy = len(running & set(self.workers_seen)) if worker_alive else 0
        ready = len(self.workers_seen) if worker_alive else 0
        body: dict[str, Any] = {
            "jobs": {
                "completed": self.counts["completed"],
                "failed": self.counts["failed"],
                "inProgress": sum(j.status is Status.IN_PROGRESS for j in self.jobs.values()),
                "inQueue": len(self._queue),
                "retried": self.counts["retried"],
            },
            "workers": {
                "idle": ready - busy,
                "running": busy,
                "initializing": int(worker_alive and not self.workers_seen),
                "unhealthy": int(not worker_alive),
            },
        }
        if start_up_failure is not None:
            body["workers"]["startUpFailure"] = start_up_failure
        return body

    async def stream(self, job: Job, wait_s: float) -> AsyncIterator[Any]:
        """Every output item of `job` as it arrives, until the job ends."""
        sent = 0
        while True:
            while sent < len(job.items):
                sent += 1
                yield job.items[sent - 1]
            if job.status.final:
                return
            await job.wait(wait_s)

    # --- worker side -------------------------------------------------------------------

    async def take(self, worker_id: str, count: int, wait_s: float) -> list[Job]:
        """Up to `count` queued jobs for a worker, waiting up to `wait_s` for the first."""
        self.workers_seen[worker_id] = time.monotonic()
        deadline = time.monotonic() + wait_s
        while worker_id not in self._retired:
            if self._queue:
                return self._hand_out(worker_id, count)
            self._queued.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queued.wait(), remaining)
        return []

    def _hand_out(self, worker_id: str, count: int) -> list[Job]:
        taken: list[Job] = []
        now = time.monotonic()
        while self._queue and len(taken) < count:
            job = self._queue[0]
            if job.expired(now):  # between two sweeps: it must not run either
                self._expire(job)
                continue
            self._queue.popleft()
            job.status, job.started, job.worker_id = Status.IN_PROGRESS, time.monotonic(), worker_id
            job.touch()
            taken.append(job)
        return taken

    def retire(self, worker_id: str) -> None:
        """A stopping worker gets no more jobs; its job poll in flight returns empty now."""
        self._retired.add(worker_id)
        self._queued.set()

    async def stops(self, worker_id: str, wait_s: float) -> list[str]:
        """Ids of this worker's jobs it must stop, waiting up to `wait_s` for one."""
        signal = self._stop_signal[worker_id]
        if not self._stops[worker_id]:
            signal.clear()
            try:
                await asyncio.wait_for(signal.wait(), wait_s)
            except TimeoutError:
                return []
        ids, self._stops[worker_id] = sorted(self._stops[worker_id]), set()
        return ids

    def add_item(self, job_id: str, item: Any) -> None:
        job = self.jobs.get(job_id)
        if job is not None and job.status is Status.IN_PROGRESS:
            job.items.append(item)
            job.touch()

    def finish(self, job_id: str, result: dict[str, Any]) -> None:
        """The worker's final result: `{"output": ...}` or `{"error": "..."}`."""
        job = self.jobs.get(job_id)
        if job is None or job.status is not Status.IN_PROGRESS:
            return  # cancelled or timed out meanwhile: the late result is dropped
        if result.get("error"):
            job.error = str(result["error"])
            self._end(job, Status.FAILED)
        else:
            job.output = result.get("output")
            self._end(job, Status.COMPLETED)

    def worker_exited(self, worker_id: str | None, message: str, fail_queued: bool) -> None:
        """Fail what a dead worker was running (and, with no replacement, what was queued)."""
        if worker_id is None:
            self.workers_seen.clear()
        else:
            self.workers_seen.pop(worker_id, None)
        for job in list(self.jobs.values()):
            if job.status is Status.IN_PROGRESS or (fail_queued and job.status is Status.IN_QUEUE):
                job.error = message
                self._end(job, Status.FAILED)

    # --- housekeeping ------------------------------------------------------------------

    def sweep(self) -> None:
        """Time out jobs over their limit; forget results past retention or the count cap."""
        now = time.monotonic()
        for job in list(self.jobs.values()):
            if job.expired(now):
                self._expire(job)
            elif job.status is Status.IN_PROGRESS and _elapsed(job.started, now) > job.timeout_s:
                job.error = f"job exceeded its execution timeout of {job.timeout_s:g} s"
                self._end(job, Status.TIMED_OUT)
        # Each result has its own retention: a short one finished after a long one still goes.
        kept = collections.deque(
            job for job in self._finished if _elapsed(job.finished, now) <= job.retention_s
        )
        while len(kept) > self._max_finished:
            kept.popleft()  # the oldest results go first
        for job in set(self._finished) - set(kept):
            self.jobs.pop(job.id, None)
        self._finished = kept

    def _expire(self, job: Job) -> None:
        job.error = f"job expired in the queue: its ttl of {job.ttl_s:g} s passed before it ran"
        self._end(job, Status.TIMED_OUT)

    def _end(self, job: Job, status: Status) -> None:
        if job.status.final:
            return
        if job.status is Status.IN_QUEUE:
            self._queue.remove(job)
        elif status in (Status.CANCELLED, Status.TIMED_OUT) and job.worker_id:
            self._stops[job.worker_id].add(job.id)
            self._stop_signal[job.worker_id].set()
        job.status, job.finished = status, time.monotonic()
        if status is Status.COMPLETED:
            self.counts["completed"] += 1
        elif status is not Status.CANCELLED:
            self.counts["failed"] += 1
        self._finished.append(job)
        job.touch()


def _elapsed(since: float | None, now: float) -> float:
    """Seconds from `since` to `now`; a job in progress has started, a finished job finished."""
    if since is None:
        raise ValueError("the job has no such time yet")
    return now - since
