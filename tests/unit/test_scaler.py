"""The SDK job loop without its polling waits: fake job source and handler, real loop code."""

from __future__ import annotations

import asyncio
import pickle
import time

import pytest
import uvloop
from runpod.serverless.modules import rp_scale
from runpod.serverless.modules.worker_state import Job, JobsProgress

from tests.helpers import until
from vllm_worker import scaler


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    """The SDK pickles its progress list to the working directory; keep it in tmp_path, and
    undo what an earlier test's scaler set on the SDK's singleton progress list."""
    monkeypatch.setattr(JobsProgress, "_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(JobsProgress, "_STATE_FILE", str(tmp_path / "jobs.pkl"))
    progress = JobsProgress()
    for name in ("_save_state", "_load_state"):
        vars(progress).pop(name, None)
    progress.clear()
    yield tmp_path / "jobs.pkl"
    for name in ("_save_state", "_load_state"):
        vars(progress).pop(name, None)


class Source:
    """Hands out `total` jobs, never more at once than asked for, and records each request."""

    def __init__(self, total: int) -> None:
        self.left = [{"id": f"job-{i}", "input": {}} for i in range(total)]
        self.asked: list[int] = []

    async def fetch(self, _session, num_jobs: int):
        self.asked.append(num_jobs)
        if not self.left:
            await asyncio.sleep(0.01)
            return None
        taken, self.left = self.left[:num_jobs], self.left[num_jobs:]
        return taken


def make_scaler(source: Source, handler, concurrency: int) -> scaler.JobScaler:
    async def no_stops(_session):
        await asyncio.sleep(0.05)
        return []

    return scaler.JobScaler(
        {
            "concurrency_modifier": lambda _current: concurrency,
            "jobs_fetcher": source.fetch,
            "jobs_handler": handler,
            "stop_signals_fetcher": no_stops,
        }
    )


async def run_until(job_scaler: scaler.JobScaler, done: asyncio.Event, timeout_s: float) -> float:
    """Seconds until `done`; then stops the loop."""
    started = time.monotonic()
    loop = asyncio.create_task(job_scaler.run())
    await asyncio.wait_for(done.wait(), timeout_s)
    elapsed = time.monotonic() - started
    job_scaler.kill_worker()
    await asyncio.wait_for(loop, 5)
    return elapsed


async def test_jobs_flow_through_free_slots_without_fixed_sleeps():
    """The SDK's own loop would sleep 1 s each time the worker looks full (about 1 s per job
    here) and start queued jobs on a 0.1 s tick; this one reacts to every free slot."""
    source = Source(total=12)
    running, most_running, finished = set(), 0, []
    all_done = asyncio.Event()

    async def handler(_session, _config, job):
        nonlocal most_running
        running.add(job["id"])
        most_running = max(most_running, len(running))
        await asyncio.sleep(0.02)
        running.discard(job["id"])
        finished.append(job["id"])
        if len(finished) == 12:
            all_done.set()

    job_scaler = make_scaler(source, handler, concurrency=2)
    elapsed = await run_until(job_scaler, all_done, timeout_s=30)

    assert sorted(finished) == sorted(f"job-{i}" for i in range(12))
    assert most_running == 2
    assert max(source.asked) <= 2, "asked for more jobs than free slots"
    assert elapsed < 1.0, f"12 jobs of 20 ms on 2 slots took {elapsed:.2f} s"


async def test_stop_lets_running_jobs_finish_within_the_grace_period(monkeypatch):
    monkeypatch.setattr(scaler.JobScaler, "grace_s", 0.3)
    source = Source(total=2)
    started, outcomes = set(), {}

    async def handler(_session, _config, job):
        started.add(job["id"])
        try:
            await asyncio.sleep(0.05 if job["id"] == "job-0" else 60)
            outcomes[job["id"]] = "finished"
        except asyncio.CancelledError:
            outcomes[job["id"]] = "cancelled"
            raise

    job_scaler = make_scaler(source, handler, concurrency=2)
    loop = asyncio.create_task(job_scaler.run())
    await until(lambda: len(started) == 2, 5, "both jobs should be running")
    job_scaler.kill_worker()
    await asyncio.wait_for(loop, 5)
    assert outcomes == {"job-0": "finished", "job-1": "cancelled"}


def test_install_replaces_the_sdk_scaler_and_its_loop(monkeypatch):
    monkeypatch.setattr(rp_scale, "JobScaler", rp_scale.JobScaler)
    monkeypatch.setattr(scaler.JobScaler, "grace_s", scaler.JobScaler.grace_s)
    policy = asyncio.get_event_loop_policy()
    try:
        scaler.install(grace_s=7)
        assert rp_scale.JobScaler is scaler.JobScaler
        assert scaler.JobScaler.grace_s == 7
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(policy)


def test_install_refuses_another_sdk_version(monkeypatch):
    monkeypatch.setattr(scaler.runpod, "__version__", "1.11.0")
    with pytest.raises(RuntimeError, match=r"1\.10\.0"):
        scaler.install(grace_s=1)


async def test_a_job_the_last_poll_brings_after_the_stop_still_runs():
    """Cancelling the poll in flight could lose a job the server has just handed out."""
    polling, stop_seen = asyncio.Event(), asyncio.Event()
    ran = []

    class LatePoll(Source):
        async def fetch(self, _session, num_jobs: int):
            self.asked.append(num_jobs)
            if len(self.asked) > 1:
                await asyncio.sleep(0.05)
                return None
            polling.set()
            await stop_seen.wait()  # a long poll, answered just after the stop
            return [{"id": "late", "input": {}}]

    async def handler(_session, _config, job):
        ran.append(job["id"])

    job_scaler = make_scaler(LatePoll(total=0), handler, concurrency=2)
    loop = asyncio.create_task(job_scaler.run())
    await asyncio.wait_for(polling.wait(), 5)
    job_scaler.kill_worker()
    stop_seen.set()
    await asyncio.wait_for(loop, 5)
    assert ran == ["late"]


async def test_the_progress_file_follows_the_jobs_written_off_the_loop(progress_file):
    """The SDK's heartbeat reports the job ids in this file; it is written from a snapshot at
    most every PROGRESS_SAVE_INTERVAL_S, and the in-memory list is never reloaded from it."""
    release, started = asyncio.Event(), set()

    async def handler(_session, _config, job):
        started.add(job["id"])
        await release.wait()

    def saved_ids() -> set[str] | None:
        """The ids in the progress file; None before its first write (it is replaced
        atomically, so it is never seen half written)."""
        if not progress_file.exists():
            return None
        with progress_file.open("rb") as saved:
            return {job.id for job in pickle.load(saved)}

    # A write is due at most PROGRESS_SAVE_INTERVAL_S after a change; allow for a slow machine.
    written_within = scaler.PROGRESS_SAVE_INTERVAL_S + 2
    job_scaler = make_scaler(Source(total=2), handler, concurrency=2)
    loop = asyncio.create_task(job_scaler.run())
    await until(lambda: len(started) == 2, 5, "both jobs should be running")
    await until(
        lambda: saved_ids() == {"job-0", "job-1"},
        written_within,
        "the progress file should list both jobs",
    )
    progress_file.write_bytes(pickle.dumps({Job(id="stale")}))  # a stale file is not read back
    # The SDK's job poll asks get_job_list, which would reload the list from the file.
    assert set(job_scaler.job_progress.get_job_list().split(",")) == {"job-0", "job-1"}
    release.set()
    await until(
        lambda: saved_ids() == set(),
        written_within,
        "the progress file should be empty once the jobs ended",
    )
    job_scaler.kill_worker()
    await asyncio.wait_for(loop, 5)
