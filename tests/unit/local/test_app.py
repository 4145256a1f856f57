"""The local endpoint's HTTP layer on raw ASGI messages, without a worker or an engine."""

import asyncio

from tests.helpers import until
from vllm_worker.local.app import body_limit, build_app
from vllm_worker.local.store import JobStore, Status


def job_take_scope(worker_id: str, token: str) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/_worker/job-take/{worker_id}",
        "raw_path": f"/_worker/job-take/{worker_id}".encode(),
        "query_string": f"token={token}&job_in_progress=0".encode(),
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def test_a_job_poll_the_worker_closed_hands_out_no_job():
    """A stopping worker cuts its long poll short; a job arriving then stays queued."""
    store = JobStore()
    app = build_app(
        store,
        lambda: True,
        api_key=None,
        worker_token="secret",
        execution_timeout_s=60,
        max_body_bytes=1000,
    )
    closed = asyncio.Event()
    sent: list[dict] = []

    async def receive() -> dict:
        if not sent and not closed.is_set():
            sent.append({"type": "request read"})
            return {"type": "http.request", "body": b"", "more_body": False}
        await closed.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    poll = asyncio.create_task(app(job_take_scope("w1", "secret"), receive, send))
    await until(lambda: "w1" in store.workers_seen, 2, "the job poll should be waiting")
    assert not poll.done()
    closed.set()
    await asyncio.wait_for(poll, 2)
    job = store.submit({"prompt": "Hi"}, 60, 60)
    assert job.status is Status.IN_QUEUE
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [204]
    assert await store.take("w2", 1, wait_s=0.1) == [job]


def test_the_bearer_scheme_is_case_insensitive():
    from starlette.testclient import TestClient

    app = build_app(
        JobStore(),
        lambda: True,
        api_key="k-123",
        worker_token="t",
        execution_timeout_s=60,
        max_body_bytes=1 << 20,
    )
    with TestClient(app) as client:
        for header in ("Bearer k-123", "bearer k-123", "BEARER  k-123", "k-123"):
            response = client.get("/v2/local/health", headers={"Authorization": header})
            assert response.status_code == 200, header
        for header in ("Bearer k-12", "Basic k-123", "", "bearer"):
            response = client.get("/v2/local/health", headers={"Authorization": header})
            assert response.status_code == 401, header


async def test_retry_requeues_a_failed_job_and_refuses_others():
    import httpx

    store = JobStore()
    app = build_app(
        store, lambda: True, api_key=None, worker_token="t", execution_timeout_s=60,
        max_body_bytes=1 << 20,
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://local") as client:
        job_id = (await client.post("/v2/local/run", json={"input": {"prompt": "x"}})).json()["id"]
        early = await client.post(f"/v2/local/retry/{job_id}")
        assert early.status_code == 400 and "IN_QUEUE" in early.json()["error"]
        await store.take("w1", 1, wait_s=0.1)
        store.finish(job_id, {"error": "boom"})
        retried = await client.post(f"/v2/local/retry/{job_id}")
        assert retried.json() == {"id": job_id, "status": "IN_QUEUE"}
        status = (await client.get(f"/v2/local/status/{job_id}")).json()
        assert status["status"] == "IN_QUEUE" and "error" not in status
        assert (await client.post("/v2/local/retry/nope")).status_code == 404


def test_each_operation_has_runpods_body_limit():
    assert body_limit("/v2/local/run") == 10_000_000
    assert body_limit("/v2/local/runsync") == 20_000_000
    assert body_limit("/v2/local/openai/v1/chat/completions") == 10_000_000
    assert body_limit("/v2/local/status/x") == 10_000_000
    assert body_limit("/v2/local/openai/v1/runsync") == 10_000_000  # not the operation
    assert body_limit("/v2/local/runsync", cap=5000) == 5000
    assert body_limit("/v2/local/run", cap=50_000_000) == 10_000_000
