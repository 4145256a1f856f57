"""Timestamps of each streamed item at every hop, to find where an item waits on its way out.

Off unless `WORKER_TRACE` names a folder; then each process that marks hops (the worker,
the local endpoint) appends one JSON line per hop to `<folder>/<role>-<pid>.jsonl`:
`{"t": <time.monotonic()>, "hop": ..., "job": ..., ...}`. CLOCK_MONOTONIC is one clock for
every process on a Linux machine, so lines of different processes compare directly.
`python -m bench.hops` turns it on, drives jobs and prints the time spent between hops.

Callers test `ENABLED` before building a mark, so a worker without the variable pays one
attribute read per item.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import IO, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FOLDER = os.environ.get("WORKER_TRACE") or None
ENABLED = FOLDER is not None

_out: IO[str] | None = None
_role = "process"
_lock = threading.Lock()


def start(role: str) -> None:
    """Name this process's trace file after `role` (call before the first mark)."""
    global _role
    _role = role


def mark(hop: str, job: str, **fields: Any) -> None:
    """Record that `job`'s item passed `hop` now; `fields` say which item (`n`, `crc`, ...)."""
    global _out
    line = json.dumps({"t": time.monotonic(), "hop": hop, "job": job, **fields})
    with _lock:
        if _out is None:
            assert FOLDER is not None, "mark() is only called when ENABLED"
            Path(FOLDER).mkdir(parents=True, exist_ok=True)
            _out = open(Path(FOLDER) / f"{_role}-{os.getpid()}.jsonl", "a", buffering=1)  # noqa: SIM115
        _out.write(line + "\n")


def traced_handler(
    handler: Callable[[dict[str, Any]], AsyncGenerator[Any]],
) -> Callable[[dict[str, Any]], AsyncGenerator[Any]]:
    """`handler`, marking `yield` as each item leaves it for the SDK."""

    async def traced(job: dict[str, Any]) -> AsyncGenerator[Any]:
        job_id = str(job.get("id"))
        n = crc = end = 0
        async for item in handler(job):
            fields = {}
            if isinstance(item, str):  # SSE text: the endpoint relays the bytes unchanged
                data = item.encode()
                crc, end = zlib.crc32(data, crc), end + len(data)
                fields = {"crc": crc, "end": end}
            mark("yield", job_id, n=n, **fields)
            n += 1
            yield item

    return traced


def asgi(app: ASGIApp) -> ASGIApp:
    """The local endpoint's `app`, marking when a worker's POST arrives (`recv`, and
    `recv_body` once its body is read), when a `/stream` answer is written (`stream_sent`, with
    how many items it carried) and when each SSE chunk of an OpenAI stream is written
    (`sse_sent`, with the running CRC-32 and length of the bytes sent so far)."""

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        parts = path.split("/")
        if "/_worker/job-stream/" in path or "/_worker/job-done/" in path:
            job, kind = parts[-1], parts[-3]
            mark("recv", job, kind=kind)

            async def receive_traced() -> Message:
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body"):
                    mark("recv_body", job, kind=kind)
                return message

            return await app(scope, receive_traced, send)
        if "/stream/" in path:
            job = parts[-1]
            mark("stream_req", job)

            async def send_stream(message: Message) -> None:
                await send(message)
                if message["type"] == "http.response.body":
                    items = len(json.loads(message.get("body") or b"{}").get("stream", ()))
                    mark("stream_sent", job, items=items)

            return await app(scope, receive, send_stream)
        if "/openai/" in path:
            crc = end = 0

            async def send_sse(message: Message) -> None:
                nonlocal crc, end
                await send(message)
                if message["type"] == "http.response.body" and (body := message.get("body")):
                    crc, end = zlib.crc32(body, crc), end + len(body)
                    mark("sse_sent", "", crc=crc, end=end)

            return await app(scope, receive, send_sse)
        return await app(scope, receive, send)

    return traced


def read(folder: Path | str) -> list[dict[str, Any]]:
    """Every mark of every process in `folder`, in time order."""
    marks = []
    for file in Path(folder).glob("*.jsonl"):
        role = file.stem.rsplit("-", 1)[0]
        for line in file.read_text().splitlines():
            if line:
                marks.append({"role": role, **json.loads(line)})
    return sorted(marks, key=lambda m: m["t"])
