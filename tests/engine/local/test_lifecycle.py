"""The job life cycle, explored by hypothesis against the real endpoint and worker.

Random sequences of submit (with or without a ttl), stream, cancel, retry, purge and pauses
run against one worker taking one job at a time, so jobs queue, expire and get cancelled in
every order. Every status seen must follow RunPod's documented transitions (IN_QUEUE ->
IN_PROGRESS -> COMPLETED | FAILED | CANCELLED | TIMED_OUT; IN_QUEUE -> CANCELLED | TIMED_OUT;
FAILED | TIMED_OUT -> IN_QUEUE by /retry), and every run of a job ends exactly once: at the
endpoint (one final status per run, counted once by /health) and at the worker (one log line
per run it took).
"""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllm_worker.local.testing import FINAL_STATUSES, LocalEndpoint, wait_until

INPUTS = {
    "short": {"prompt": "Hi", "sampling_params": {"max_tokens": 4}},
    "long": {
        "prompt": "Tell a story.",
        "sampling_params": {"max_tokens": 3000, "ignore_eos": True},
    },
    "bad": {"prompt": "Hi", "sampling_params": {"top_p": 3}},
}
#: What each input may end as, besides CANCELLED (by us) and TIMED_OUT (its ttl, if it has one).
ENDS = {"short": "COMPLETED", "long": None, "bad": "FAILED"}
TTL_MS = 10_000
RANK = {"IN_QUEUE": 0, "IN_PROGRESS": 1} | dict.fromkeys(FINAL_STATUSES, 2)

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(sorted(INPUTS)), st.booleans()),
        st.tuples(st.sampled_from(["cancel", "retry", "stream"]), st.integers(0, 5)),
        st.tuples(st.just("purge")),
        st.tuples(st.just("pause"), st.sampled_from([0.0, 0.3, 1.0])),
    ),
    min_size=2,
    max_size=8,
)


@dataclasses.dataclass
class Tracked:
    """One job as the client saw it: its input, its last status, and how each run ended."""

    id: str
    kind: str
    ttl: bool
    status: str = "IN_QUEUE"
    cancelled: bool = False  # we cancelled or purged it during its current run
    ends: list[dict] = dataclasses.field(default_factory=list)  # the final view of each run


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    log = tmp_path_factory.mktemp("lifecycle") / "endpoint.log"
    with LocalEndpoint(log, MAX_CONCURRENCY="1") as endpoint:
        endpoint.wait_ready()
        yield endpoint


def observe(endpoint: LocalEndpoint, job: Tracked, status: str) -> None:
    """Check one status against the job's previous one and what its run may end as."""
    if job.status in FINAL_STATUSES:
        assert status == job.status, f"{job} changed after its end: {status}"
        return
    assert RANK[status] >= RANK[job.status], f"{job} went back: {status}"
    job.status = status
    if status not in FINAL_STATUSES:
        return
    view = endpoint.status(job.id)  # the whole record of the run, final and stable
    assert view["status"] == status, view
    job.ends.append(view)
    if status == "CANCELLED":
        assert job.cancelled, f"{job} was cancelled by nobody: {view}"
    elif status == "TIMED_OUT":
        assert job.ttl and "delayTime" not in view, f"{job} timed out, not by its ttl: {view}"
        assert view["error"].startswith("job expired in the queue"), view
    else:
        assert status == ENDS[job.kind], f"{job} ended {view}"


def observe_all(endpoint: LocalEndpoint, jobs: list[Tracked]) -> None:
    for job in jobs:
        observe(endpoint, job, endpoint.status(job.id)["status"])


def act(endpoint: LocalEndpoint, jobs: list[Tracked], action: tuple) -> None:
    name, *args = action
    if name == "submit":
        kind, ttl = args
        policy = {"ttl": TTL_MS} if ttl else {}
        jobs.append(Tracked(endpoint.run(INPUTS[kind], policy=policy), kind, ttl))
    elif name == "pause":  # a timing, not a measurement
        time.sleep(args[0])
    elif name == "purge":
        queued = [job for job in jobs if endpoint.status(job.id)["status"] == "IN_QUEUE"]
        for job in queued:
            job.cancelled = True  # anything still queued now is purged
        endpoint.request("POST", "purge-queue")
    elif jobs:
        job = jobs[args[0] % len(jobs)]
        if name == "cancel":
            job.cancelled = job.cancelled or job.status not in FINAL_STATUSES
            endpoint.cancel(job.id)
        elif name == "stream":
            observe(endpoint, job, endpoint.request("POST", f"stream/{job.id}").json()["status"])
        elif job.status in FINAL_STATUSES:  # retry; a run still going may end meanwhile
            answer = endpoint.request("POST", f"retry/{job.id}")
            retryable = job.status in ("FAILED", "TIMED_OUT")
            assert answer.status_code == (200 if retryable else 400), (job, answer.text)
            if retryable:
                assert answer.json()["status"] == "IN_QUEUE"
                job.status, job.cancelled = "IN_QUEUE", False
    observe_all(endpoint, jobs)


def worker_runs(log: str, job_id: str) -> dict[str, int]:
    """How often the worker logged each outcome of this job."""
    outcomes = re.findall(rf"job {re.escape(job_id)} (\w+) in ", log)
    return {outcome: outcomes.count(outcome) for outcome in set(outcomes)}


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(actions=ACTIONS, let_expire=st.booleans())
def test_every_job_follows_runpods_life_cycle_and_ends_once(endpoint, actions, let_expire):
    counted = endpoint.health()["jobs"]
    jobs: list[Tracked] = []
    for action in actions:
        act(endpoint, jobs, action)
    if let_expire and any(job.ttl and job.status == "IN_QUEUE" for job in jobs):
        time.sleep(TTL_MS / 1000 + 2.5)  # queued jobs with a ttl expire behind a running one
        observe_all(endpoint, jobs)
    for job in jobs:  # end every run still going
        if job.status not in FINAL_STATUSES:
            job.cancelled = True
            endpoint.cancel(job.id)
    observe_all(endpoint, jobs)
    for job in jobs:
        assert job.status in FINAL_STATUSES and job.ends[-1]["status"] == job.status, job

    # At the endpoint: each run ended once, and /health counted each non-cancelled end once.
    now = endpoint.health()["jobs"]
    ended = sum(view["status"] != "CANCELLED" for job in jobs for view in job.ends)
    assert now["completed"] + now["failed"] - counted["completed"] - counted["failed"] == ended

    # At the worker: at most one log line per run it took, and one for every run that ended
    # with its result (a run cancelled as it finished may log its own outcome).
    for job in jobs:
        completed = sum(view["status"] == "COMPLETED" for view in job.ends)
        failed = sum(view["status"] == "FAILED" for view in job.ends)
        taken = sum("delayTime" in view for view in job.ends)

        def logged(job: Tracked = job, completed: int = completed, failed: int = failed) -> list:
            runs = worker_runs(endpoint.log_text(), job.id)
            enough = runs.get("completed", 0) >= completed and runs.get("failed", 0) >= failed
            return [runs] if enough else []

        runs = wait_until(logged, 30, f"the worker's log lines of {job}")[0]
        assert sum(runs.values()) <= taken, (job, runs)
