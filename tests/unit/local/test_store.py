"""The local endpoint's job queue and life cycle, without HTTP or an engine."""

import asyncio
import time

from tests.helpers import until
from vllm_worker.local.store import JobStore, Status


def submit(store: JobStore, timeout_s: float = 60, retention_s: float = 60):
    return store.submit({"prompt": "Hi"}, timeout_s, retention_s)


async def test_jobs_are_taken_in_order_and_in_batches():
    store = JobStore()
    jobs = [submit(store) for _ in range(3)]
    taken = await store.take("w1", 2, wait_s=0.1)
    assert taken == jobs[:2]
    assert all(j.status is Status.IN_PROGRESS and j.worker_id == "w1" for j in taken)
    assert await store.take("w1", 5, wait_s=0.1) == jobs[2:]
    assert await store.take("w1", 5, wait_s=0.05) == []


async def test_take_waits_for_a_job_to_arrive():
    store = JobStore()
    waiting = asyncio.create_task(store.take("w1", 1, wait_s=5))
    await until(lambda: "w1" in store.workers_seen, 1, "the poll should have begun")
    assert not waiting.done()
    job = submit(store)
    assert await asyncio.wait_for(waiting, 1) == [job]


async def test_results_items_and_errors():
    store = JobStore()
    ok, bad = submit(store), submit(store)
    await store.take("w1", 2, wait_s=0.1)
    store.add_item(ok.id, {"n": 1})
    store.finish(ok.id, {"output": [{"n": 1}]})
    store.finish(bad.id, {"error": "sampling_params.top_p: too big"})
    assert ok.view()["status"] == "COMPLETED" and ok.view()["output"] == [{"n": 1}]
    assert bad.view()["error"] == "sampling_params.top_p: too big"
    assert store.counts["completed"] == 1 and store.counts["failed"] == 1


async def test_cancel_stops_a_running_job_on_its_worker_and_drops_late_results():
    store = JobStore()
    job = submit(store)
    await store.take("w1", 1, wait_s=0.1)
    stop_poll = asyncio.create_task(store.stops("w1", wait_s=5))
    # The poll is waiting once it has made its worker's stop signal.
    await until(lambda: "w1" in store._stop_signal, 1, "the stop poll should have begun")
    assert not stop_poll.done()
    store.cancel(job)
    assert await asyncio.wait_for(stop_poll, 1) == [job.id]
    store.finish(job.id, {"output": ["late"]})
    store.add_item(job.id, "late")
    assert job.status is Status.CANCELLED and job.items == [] and job.output is None


async def test_cancel_and_purge_remove_queued_jobs():
    store = JobStore()
    first, second, third = submit(store), submit(store), submit(store)
    store.cancel(first)
    assert store.purge_queue() == 2
    assert {j.status for j in (first, second, third)} == {Status.CANCELLED}
    assert await store.take("w1", 3, wait_s=0.05) == []
    assert await store.stops("w1", wait_s=0.05) == []


async def test_execution_timeout_and_retention():
    store = JobStore()
    job = submit(store, timeout_s=0.05, retention_s=0.1)
    await store.take("w1", 1, wait_s=0.1)
    store.sweep()
    assert job.status is Status.IN_PROGRESS  # not before its time
    await asyncio.sleep(0.06)
    store.sweep()
    assert job.status is Status.TIMED_OUT and "execution timeout" in job.error
    assert await store.stops("w1", wait_s=0.1) == [job.id]
    await asyncio.sleep(0.1)
    store.sweep()
    assert job.id not in store.jobs


async def test_finished_results_are_capped_in_number():
    store = JobStore(max_finished=3)
    jobs = [submit(store, retention_s=3600) for _ in range(5)]
    for job in jobs:
        store.cancel(job)
    store.sweep()
    assert set(store.jobs) == {j.id for j in jobs[2:]}


async def test_dead_worker_fails_running_and_optionally_queued_jobs():
    store = JobStore()
    running, queued = submit(store), None
    await store.take("w1", 1, wait_s=0.1)
    queued = submit(store)
    store.worker_exited(None, "the worker process exited", fail_queued=False)
    assert running.status is Status.FAILED and queued.status is Status.IN_QUEUE
    store.worker_exited(None, "the worker process exited", fail_queued=True)
    assert queued.status is Status.FAILED and queued.error == "the worker process exited"
    assert store.health(worker_alive=False)["workers"]["unhealthy"] == 1


async def test_stream_follows_items_until_the_end():
    store = JobStore()
    job = submit(store)
    await store.take("w1", 1, wait_s=0.1)

    async def produce():
        for i in range(3):
            await asyncio.sleep(0.01)
            store.add_item(job.id, i)
        store.finish(job.id, {"output": [0, 1, 2]})

    async def follow() -> list:
        return [item async for item in store.stream(job, wait_s=1)]

    producer = asyncio.create_task(produce())
    assert await asyncio.wait_for(follow(), 5) == [0, 1, 2]
    await producer


async def test_a_retired_worker_gets_no_more_jobs_and_its_poll_returns_at_once():
    store = JobStore()
    polling = asyncio.create_task(store.take("w1", 1, wait_s=30))
    await until(lambda: "w1" in store.workers_seen, 1, "the poll should have begun")
    assert not polling.done()
    store.retire("w1")
    assert await asyncio.wait_for(polling, 1) == []
    job = submit(store)
    assert await store.take("w1", 1, wait_s=0.1) == []
    assert await store.take("w2", 1, wait_s=0.1) == [job]


async def test_each_result_is_kept_for_its_own_retention(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = JobStore()
    long_kept, short_kept = submit(store, retention_s=1800), submit(store, retention_s=60)
    store.cancel(long_kept)  # finished first, kept for 30 minutes
    now[0] += 5
    store.cancel(short_kept)  # finished later, kept for a minute
    now[0] += 61
    store.sweep()
    assert set(store.jobs) == {long_kept.id}
    now[0] += 1800
    store.sweep()
    assert store.jobs == {}


async def test_a_failed_or_timed_out_job_can_be_retried():
    store = JobStore()
    failed, timed_out, completed = submit(store), submit(store, timeout_s=0.01), submit(store)
    await store.take("w1", 3, wait_s=0.1)
    store.add_item(failed.id, "partial")
    store.finish(failed.id, {"error": "boom"})
    store.finish(completed.id, {"output": ["done"]})
    await until(lambda: (store.sweep(), timed_out.status)[1] is Status.TIMED_OUT, 5, "timeout")
    assert store.retry(failed) and store.retry(timed_out)
    assert not store.retry(completed) and completed.output == ["done"]
    for job in (failed, timed_out):
        assert (job.status, job.items, job.output, job.error) == (Status.IN_QUEUE, [], None, None)
    assert store.health(True)["jobs"]["retried"] == 2
    assert {job.id for job in await store.take("w1", 5, wait_s=0.1)} == {failed.id, timed_out.id}
    store.finish(failed.id, {"output": ["second try"]})
    assert failed.status is Status.COMPLETED and failed.output == ["second try"]


async def test_a_job_queued_past_its_ttl_times_out_and_never_runs(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = JobStore()
    swept = store.submit({"prompt": "Hi"}, 60, 60, ttl_s=10)
    taken_late = store.submit({"prompt": "Hi"}, 60, 60, ttl_s=15)
    fresh = store.submit({"prompt": "Hi"}, 600, 60, ttl_s=30)
    now[0] += 10
    store.sweep()
    assert swept.status is Status.IN_QUEUE  # not before its time
    now[0] += 1
    store.sweep()
    assert swept.status is Status.TIMED_OUT
    assert swept.error == "job expired in the queue: its ttl of 10 s passed before it ran"
    now[0] += 5  # expired between two sweeps: a worker's poll must not get it
    assert await store.take("w1", 5, wait_s=0) == [fresh]
    assert taken_late.status is Status.TIMED_OUT and taken_late.view()["status"] == "TIMED_OUT"
    assert store.health(True)["jobs"] == {
        "completed": 0, "failed": 2, "inProgress": 1, "inQueue": 0, "retried": 0,
    }  # fmt: skip
    now[0] += 100  # a running job is past its ttl: only its execution timeout ends it
    store.sweep()
    assert fresh.status is Status.IN_PROGRESS


async def test_a_retried_expired_job_gets_its_ttl_again(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = JobStore()
    job = store.submit({"prompt": "Hi"}, 60, 60, ttl_s=10)
    now[0] += 11
    store.sweep()
    assert store.retry(job) and job.status is Status.IN_QUEUE
    now[0] += 9
    store.sweep()
    assert await store.take("w1", 1, wait_s=0) == [job]
    assert job.view()["delayTime"] == 9000  # counted from the retry


def test_health_carries_a_start_up_failure_beside_the_worker_counts():
    store = JobStore()
    assert "startUpFailure" not in store.health(worker_alive=True)["workers"]
    workers = store.health(worker_alive=True, start_up_failure="X=1 is wrong.")["workers"]
    assert workers["startUpFailure"] == "X=1 is wrong."
    assert workers["unhealthy"] == 0  # the worker runs: it fails each job with the reason
