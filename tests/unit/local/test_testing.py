"""The local-endpoint harness (`vllm_worker.local.testing`) without an engine: a stand-in
endpoint serves the real HTTP app and job store, with a fake worker process tree and a fake
in-process worker loop that streams a count."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
import time

import httpx
import pytest

from vllm_worker.local.testing import EndpointExited, LocalEndpoint, wait_until

FAKE_ENDPOINT = textwrap.dedent(
    """
    import asyncio, logging, os, subprocess, sys, time

    import uvicorn

    from vllm_worker.local.app import build_app
    from vllm_worker.local.store import JobStore

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    log = logging.getLogger("fake")
    # A process tree like the real one: endpoint -> worker -> engine core.
    ENGINE = "import time; time.sleep(600)"
    WORKER = (
        "import subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {ENGINE!r}, 'EngineCore']); time.sleep(600)"
    )


    async def run(store, job, slots):
        try:
            for count in range(1, job.input["tokens"] + 1):
                await asyncio.sleep(job.input.get("step_s", 0.01))
                store.add_item(job.id, {"usage": {"output": count}})
            log.info("job %s completed", job.id)
            store.finish(job.id, {"output": [{"usage": {"output": count}}]})
        finally:
            slots.release()


    async def work(store):
        slots = asyncio.Semaphore(int(os.environ.get("MAX_CONCURRENCY", "8")))
        await asyncio.sleep(float(os.environ.get("FAKE_START_S", "0")))
        tasks = set()
        while True:  # a job is taken only into a free slot, as the SDK's loop does
            await slots.acquire()
            taken = await store.take("fake-worker", 1, wait_s=1)
            if not taken:
                slots.release()
            for job in taken:
                tasks.add(asyncio.create_task(run(store, job, slots)))


    async def main():
        store = JobStore()
        worker = subprocess.Popen([sys.executable, "-c", WORKER, "vllm_worker"])
        app = build_app(store, lambda: True, api_key=os.environ.get("RUNPOD_API_KEY"),
                        worker_token="fake", execution_timeout_s=600, max_body_bytes=10**6)
        config = uvicorn.Config(app, host="127.0.0.1", port=int(os.environ["PORT"]),
                                log_level="warning")
        working = asyncio.create_task(work(store))
        await uvicorn.Server(config).serve()
        working.cancel()
        worker.kill()


    asyncio.run(main())
    """
)


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_endpoint.py"
    script.write_text(FAKE_ENDPOINT)
    return [sys.executable, str(script)]


def job(tokens: int, step_s: float = 0.01) -> dict:
    return {"tokens": tokens, "step_s": step_s}


def test_runs_jobs_streams_and_reads_the_log(tmp_path, fake):
    with LocalEndpoint(tmp_path / "log", command=fake, FAKE_START_S="0.5") as endpoint:
        ready = endpoint.wait_ready(timeout_s=30)
        assert endpoint.spawned + 0.5 < ready <= time.time()
        job_id = endpoint.run(job(3))
        result = endpoint.wait_final(job_id, timeout_s=10)
        assert result["status"] == "COMPLETED" and result["output"] == [{"usage": {"output": 3}}]
        endpoint.wait_log(rf"job {job_id} completed", timeout_s=5)

        streaming = endpoint.run(job(200))
        first = endpoint.wait_stream(streaming, timeout_s=10)
        assert (
            first["status"] == "IN_PROGRESS"
            and first["stream"][0]["output"]["usage"]["output"] == 1
        )
        assert endpoint.cancel(streaming) == {"id": streaming, "status": "CANCELLED"}


def test_the_key_is_required_and_sent(tmp_path, fake):
    with LocalEndpoint(tmp_path / "log", api_key="k-1", command=fake) as endpoint:
        endpoint.wait_ready(timeout_s=30)
        assert endpoint.headers == {"Authorization": "Bearer k-1"}
        assert httpx.get(f"{endpoint.url}/health", trust_env=False).status_code == 401
        assert endpoint.request("GET", "health").status_code == 200
    with LocalEndpoint(tmp_path / "log2", api_key=None, command=fake) as keyless:
        keyless.wait_ready(timeout_s=30)
        assert keyless.headers == {}
        assert httpx.get(f"{keyless.url}/health", trust_env=False).status_code == 200


def test_most_in_progress_sees_the_concurrency_limit(tmp_path, fake):
    with LocalEndpoint(tmp_path / "log", command=fake, MAX_CONCURRENCY="3") as endpoint:
        endpoint.wait_ready(timeout_s=30)
        ended = endpoint.jobs_ended()
        ids = [endpoint.run(job(10, 0.02)) for _ in range(9)]
        assert endpoint.most_in_progress(until_done=9, timeout_s=30, since=ended) == 3
        assert all(endpoint.status(i)["status"] == "COMPLETED" for i in ids)


def test_waits_fail_at_their_deadline_saying_what_they_waited_for(tmp_path, fake):
    with LocalEndpoint(tmp_path / "log", command=fake) as endpoint:
        endpoint.wait_ready(timeout_s=30)
        job_id = endpoint.run(job(1000))
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"job {job_id} to end; last: .*IN_PROGRESS"):
            endpoint.wait_final(job_id, timeout_s=0.3)
        with pytest.raises(TimeoutError, match="a log line matching 'never printed'"):
            endpoint.wait_log("never printed", timeout_s=0.3)
        with pytest.raises(TimeoutError, match="9 jobs to end; 0 did"):
            endpoint.most_in_progress(until_done=9, timeout_s=0.3)
        assert time.monotonic() - started < 5
        endpoint.cancel(job_id)


def test_processes_and_stop(tmp_path, fake):
    endpoint = LocalEndpoint(tmp_path / "log", command=fake)
    try:
        endpoint.wait_ready(timeout_s=30)
        worker = endpoint.worker()
        assert worker.ppid() == endpoint.process.pid and endpoint.worker_pid() == worker.pid
        core = wait_until(lambda: _engine_core(endpoint), 10, "the fake engine core")
        assert "EngineCore" in " ".join(core.cmdline()) and core.ppid() == worker.pid
    finally:
        code = endpoint.stop()
    # SIGTERM stopped it: uvicorn serves until the signal, then re-raises it.
    assert code == -signal.SIGTERM
    assert endpoint.stop() == code  # again: nothing left to do
    assert not core.is_running() or core.status() == "zombie"


def _engine_core(endpoint):
    try:
        return endpoint.engine_core()
    except RuntimeError:  # not started yet
        return None


def test_an_endpoint_that_exits_ends_the_wait_with_its_log(tmp_path):
    command = [sys.executable, "-c", "print('bad setting: PORT'); raise SystemExit(2)"]
    with LocalEndpoint(tmp_path / "log", command=command) as endpoint:
        with pytest.raises(EndpointExited, match=r"(?s)exited with code 2.*bad setting: PORT"):
            endpoint.wait_ready(timeout_s=30)
        with pytest.raises(EndpointExited):
            endpoint.wait_log("never", timeout_s=30)
    assert endpoint.process.returncode == 2


def test_environment_and_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("ENDPOINT_ID", "from-the-shell")
    monkeypatch.setenv("MODEL_NAME", "some/model")
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    with LocalEndpoint(
        tmp_path / "log", command=[sys.executable, "-c", dump], MODEL_NAME=None, EXTRA="1"
    ) as endpoint:
        endpoint.process.wait(30)
    env = json.loads(endpoint.log_text())
    assert "HOST" not in env and "ENDPOINT_ID" not in env and "MODEL_NAME" not in env
    assert env["EXTRA"] == "1" and env["RUNPOD_API_KEY"] == "test-key"
    assert env["PORT"] == str(endpoint.port)
    assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/v2/local"
    with pytest.raises(ValueError):
        LocalEndpoint(tmp_path / "log", PORT="1")


def test_wait_until_returns_the_value_or_names_what_it_waited_for():
    calls = iter([0, None, "done"])
    assert wait_until(lambda: next(calls), 1, "a value", interval_s=0.01) == "done"
    with pytest.raises(TimeoutError, match=r"waited 0.05 s for the moon"):
        wait_until(lambda: False, 0.05, lambda: "the moon", interval_s=0.01)
