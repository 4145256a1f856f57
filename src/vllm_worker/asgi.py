"""Calling an ASGI app in-process, one request at a time, with its response streamed back.

httpx's `ASGITransport` collects a whole response body before it returns, which would turn
every stream into one late item; this call hands on each message the app sends as it sends it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.types import ASGIApp, Message, Scope

logger = logging.getLogger(__name__)

#: Running app calls, so a call whose caller has left finishes (and aborts) undisturbed.
_calls: set[asyncio.Future[None]] = set()


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes,
    context: contextvars.Context | None = None,
) -> AsyncGenerator[list[Message]]:
    """Send one JSON request to `app` and yield the messages it sends, as soon as it sends them.

    Each yield holds every message sent since the previous one (at least one): what the app
    wrote in one go, such as the SSE events of one engine output, arrives together. The app
    runs in `context` (default: a copy of the caller's). Leaving this generator early answers
    the app's next `receive()` with a disconnect, which is how a server learns that a client
    left (vLLM then aborts the request and ends on its own). The app's task outlives the
    generator until it ends by itself.
    """
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": None,
        "server": None,
    }
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    left = asyncio.Event()
    request: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> Message:
        nonlocal request
        if request is not None:
            message, request = request, None
            return message
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.put_nowait(message)

    def ended(task: asyncio.Future[None]) -> None:
        _calls.discard(task)
        sent.put_nowait(None)
        # Starlette re-raises an unhandled error after sending its 500 response.
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("the in-process app failed on %s", path, exc_info=error)

    async def run() -> None:
        await app(scope, receive, send)

    task = asyncio.get_running_loop().create_task(run(), context=context)
    _calls.add(task)
    task.add_done_callback(ended)
    try:
        done = False  # the response is complete (whatever the app still does after it)
        while not done and (message := await sent.get()) is not None:
            messages = [message]
            while not sent.empty():
                more = sent.get_nowait()
                if more is None:  # the app ended
                    done = True
                    break
                messages.append(more)
            yield messages
            done = done or any(_last_body(m) for m in messages)
    finally:
        left.set()


def _last_body(message: Message) -> bool:
    return message["type"] == "http.response.body" and not message.get("more_body")


def body_of(messages: list[Message]) -> bytes:
    """The body bytes among `messages`."""
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def read_body(sent: AsyncIterator[list[Message]]) -> bytes:
    """The rest of a response body."""
    return b"".join([body_of(messages) async for messages in sent])
