"""The in-process ASGI call on tiny apps: messages as sent, the body, disconnects, failures."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing

from tests.helpers import until
from vllm_worker import asgi


def streaming_app(parts: int, gate: asyncio.Event | None = None):
    """Echoes the request body, then sends `parts` more chunks; records what it received."""
    seen: list[dict] = []

    async def app(scope, receive, send) -> None:
        request = await receive()
        seen.append(request)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": request["body"], "more_body": True})
        for i in range(parts):
            if gate is not None:
                await gate.wait()
            await send({"type": "http.response.body", "body": b"%d" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        seen.append(await receive())

    return app, seen


async def test_messages_arrive_as_the_app_sends_them_grouped_by_what_it_sent_at_once():
    gate = asyncio.Event()
    app, seen = streaming_app(2, gate)
    async with aclosing(asgi.call(app, "POST", "/x", b"hello")) as messages:
        start, first = await anext(messages)  # sent without waiting in between
        assert (start["type"], start["status"]) == ("http.response.start", 200)
        assert first["body"] == b"hello"  # before the app may send the rest
        gate.set()
        assert await asgi.read_body(messages) == b"01"
    assert seen[0] == {"type": "http.request", "body": b"hello", "more_body": False}


async def test_the_app_runs_in_the_given_context():
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="caller's")
    context = contextvars.copy_context()
    context.run(var.set, "given")
    values = []

    async def app(scope, receive, send) -> None:
        values.append(var.get())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    assert [m async for m in asgi.call(app, "GET", "/", b"", context)]
    assert values == ["given"] and var.get() == "caller's"


async def test_leaving_early_tells_the_app_the_client_left():
    gate = asyncio.Event()
    app, seen = streaming_app(1, gate)
    messages = asgi.call(app, "POST", "/x", b"")
    await anext(messages)
    await messages.aclose()
    gate.set()
    # The app's task outlives the caller and ends on its own.
    await until(lambda: len(seen) == 2, 5, "the app should receive the disconnect")
    assert seen[1] == {"type": "http.disconnect"}
    assert not asgi._calls


async def test_an_app_failure_ends_the_messages_and_is_logged(caplog):
    async def failing(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="vllm_worker.asgi"):
        received = [m async for messages in asgi.call(failing, "GET", "/y", b"") for m in messages]
    assert [m["type"] for m in received] == ["http.response.start"]
    assert "the in-process app failed on /y" in caplog.text
