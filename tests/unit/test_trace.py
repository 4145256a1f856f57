"""The hop trace: marks of the handler's items and of the endpoint's HTTP traffic, no engine."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from vllm_worker import trace


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(trace, "FOLDER", str(tmp_path))
    monkeypatch.setattr(trace, "_out", None)
    monkeypatch.setattr(trace, "_role", "test")
    yield tmp_path
    if trace._out is not None:
        trace._out.close()


async def test_items_leave_the_handler_unchanged_and_each_is_marked(folder):
    async def handler(job: dict[str, Any]) -> AsyncGenerator[Any]:
        yield {"tokens": 1}
        yield "data: a\n\n"
        yield "data: bc\n\n"

    items = [item async for item in trace.traced_handler(handler)({"id": "j1"})]

    assert items == [{"tokens": 1}, "data: a\n\n", "data: bc\n\n"]
    marks = trace.read(folder)
    assert [(m["role"], m["hop"], m["job"], m["n"]) for m in marks] == [
        ("test", "yield", "j1", n) for n in range(3)
    ]
    assert "crc" not in marks[0]
    sent = b"data: a\n\ndata: bc\n\n"  # the running CRC is the one the client computes
    assert (marks[2]["crc"], marks[2]["end"]) == (zlib.crc32(sent), len(sent))


async def call(app, path: str, body: bytes = b"") -> list[dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "path": path}, receive, send)
    return sent


async def test_the_endpoint_marks_receipts_stream_answers_and_sse_chunks(folder):
    async def app(scope, receive, send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        if "/stream/" in scope["path"]:
            body = json.dumps({"stream": [{"output": 1}, {"output": 2}]}).encode()
            await send({"type": "http.response.body", "body": body})
        elif "/openai/" in scope["path"]:
            for chunk in (b"data: a\n\n", b"data: bc\n\n"):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": b""})

    traced = trace.asgi(app)
    await call(traced, "/_worker/job-stream/w1/j1", b'{"output": 1}')
    await call(traced, "/v2/local/stream/j1")
    await call(traced, "/v2/local/openai/v1/chat/completions")
    await call(traced, "/v2/local/health")

    marks = [(m["hop"], m["job"]) for m in trace.read(folder)]
    assert marks == [
        ("recv", "j1"),
        ("recv_body", "j1"),
        ("stream_req", "j1"),
        ("stream_sent", "j1"),
        ("sse_sent", ""),
        ("sse_sent", ""),
    ]
    stream_sent, _, last = trace.read(folder)[3:]
    assert stream_sent["items"] == 2
    assert last["crc"] == zlib.crc32(b"data: a\n\ndata: bc\n\n")
