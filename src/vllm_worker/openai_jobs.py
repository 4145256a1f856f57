"""OpenAI-compatible jobs, served in-process by vLLM's own OpenAI app on the worker's engine.

RunPod turns a call to `.../openai/v1/<path>` into a job whose input is
`{"openai_route": "/v1/<path>", "openai_input": <request body>}`. vLLM's FastAPI app already
does everything an OpenAI server does (request validation, chat templates, tool-call and
reasoning parsers, OpenAI-style errors), so this module only carries the job to that app and
its response back: a JSON body becomes the job's one item; an SSE stream is yielded in groups
of whole events, sized by the same growing batch policy as native streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vllm_worker.batching import TICK, BatchPolicy, paced
from vllm_worker.config import Config
from vllm_worker.errors import JobInputError, validate
from vllm_worker.jobs import StreamBatching

logger = logging.getLogger(__name__)

#: Packages of vLLM's app whose routes serve the model. The rest of the app runs the server
#: (health, load, version, metrics, profiling, LoRA loading, sleep and RPC, elastic EP,
#: SageMaker, RL weight updates) and is not reachable through jobs. Audio transcription takes
#: multipart file uploads, which a JSON job cannot carry.
_SERVING_PACKAGES = (
    "vllm.entrypoints.openai.",
    "vllm.entrypoints.anthropic.",
    "vllm.entrypoints.cohere.",
    "vllm.entrypoints.generate.",
    "vllm.entrypoints.pooling.",
    "vllm.entrypoints.scale_out.",
    "vllm.entrypoints.serve.tokenize.",
)
#: A serving package's route that acts on other clients' requests.
_ADMIN_PATHS = frozenset({"/inference/v1/abort_requests"})

_EVENT_END = b"\n\n"

#: Running app calls, so a call whose job has left finishes (and aborts) undisturbed.
_calls: set[asyncio.Task] = set()


class OpenAIError(Exception):
    """A failed OpenAI job; the message is the JSON of an OpenAI error object."""


class OpenAIJob(StreamBatching, BaseModel):
    """An OpenAI job's input: the route, its request body, and optional stream batching."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    openai_route: str = Field(description="Route of vLLM's OpenAI app, e.g. /v1/chat/completions.")
    openai_input: dict[str, Any] | None = Field(
        None, description="The request body; none for GET routes such as /v1/models."
    )
    max_batch_size: int | None = Field(None, ge=1, description="Most SSE events per yield.")
    min_batch_size: int | None = Field(None, ge=1, description="SSE events in the first yield.")
    batch_size_growth_factor: float | None = Field(None, ge=1, description="Yield size growth.")


def error_json(message: str, err_type: str, status: HTTPStatus, param: str | None = None) -> str:
    """An error the worker raises itself, in the shape of vLLM's own OpenAI errors."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    return create_error_response(message, err_type, status, param).model_dump_json()


def parse_openai(raw: dict) -> OpenAIJob:
    """Validate an OpenAI job's input or raise `OpenAIError`."""
    try:
        return validate(OpenAIJob, raw)
    except JobInputError as error:
        raise OpenAIError(
            error_json(str(error), "BadRequestError", HTTPStatus.BAD_REQUEST)
        ) from None


def job_routes(app) -> dict[str, str]:
    """Route -> HTTP method, for every route of vLLM's app a job may call.

    Routes with path parameters (`/v1/responses/{id}`) are left out: they address state held
    by one server process, and each job may land on another worker.
    """
    from fastapi.routing import APIRoute

    routes = {}
    for route in app.routes:
        if (
            isinstance(route, APIRoute)
            and route.include_in_schema  # hides docs and disabled stubs
            and not route.param_convertors
            and route.endpoint.__module__.startswith(_SERVING_PACKAGES)
            and route.path not in _ADMIN_PATHS
        ):
            routes[route.path] = "POST" if "POST" in route.methods else min(route.methods)
    return routes


class OpenAIServer:
    """vLLM's OpenAI app on the worker's engine, and how jobs reach it.

    The app is built on the first OpenAI job, not before: its set-up awaits the engine, so it
    must run on the event loop that serves the jobs, which the SDK only starts later.
    """

    def __init__(self, engine, config: Config) -> None:
        self._engine = engine
        self._args = config.vllm_args
        self._settings = config.worker
        self._built: asyncio.Future | None = None

    async def _app(self) -> tuple[Any, dict[str, str]]:
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        try:
            # One build for every job; a job cancelled meanwhile must not cancel it for others.
            return await asyncio.shield(self._built)
        except Exception as error:  # a set-up failure fails each OpenAI job, not the worker
            raise OpenAIError(
                error_json(
                    f"vLLM's OpenAI server could not start: {error}",
                    "InternalServerError",
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                )
            ) from error

    async def _build(self) -> tuple[Any, dict[str, str]]:
        """What `vllm serve` does between creating its engine and serving HTTP."""
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.reasoning import ReasoningParserManager
        from vllm.tool_parsers import ToolParserManager

        try:
            if self._args.tool_parser_plugin:
                ToolParserManager.import_tool_parser(self._args.tool_parser_plugin)
            if self._args.reasoning_parser_plugin:
                ReasoningParserManager.import_reasoning_parser(self._args.reasoning_parser_plugin)
            tasks = await self._engine.get_supported_tasks()
            app = build_app(self._args, tasks, self._engine.model_config)
            await init_app_state(self._engine, app.state, self._args, tasks)
        except Exception:
            logger.exception("vLLM's OpenAI server could not start; OpenAI jobs will fail")
            raise
        routes = job_routes(app)
        logger.info("OpenAI routes for jobs: %s", ", ".join(sorted(routes)))
        return app, routes

    async def run(self, raw: dict) -> AsyncIterator[dict | str | list]:
        """Serve one job: the response JSON, or its SSE stream in batches of whole events.

        Closing this generator tells vLLM's app that the client left, and vLLM aborts the
        request, as it does for a dropped HTTP connection.
        """
        job = parse_openai(raw)
        app, routes = await self._app()
        method = routes.get(job.openai_route)
        if method is None:
            raise OpenAIError(
                error_json(
                    f"openai_route {job.openai_route} is not served; supported routes: "
                    + ", ".join(sorted(routes)),
                    "NotFoundError",
                    HTTPStatus.NOT_FOUND,
                    "openai_route",
                )
            )
        body = b"" if job.openai_input is None else json.dumps(job.openai_input).encode()
        async with aclosing(call_app(app, method, job.openai_route, body)) as messages:
            start = await anext(messages)
            if start["status"] >= 400:
                raise OpenAIError((await _body(messages)).decode())
            content_type = dict(start["headers"]).get(b"content-type", b"")
            if not content_type.startswith(b"text/event-stream"):
                yield json.loads(await _body(messages))
                return
            batches = EventBatches(job.policy(self._settings))
            source = paced(messages, batches.time_left) if batches.max_wait_s else messages
            async with aclosing(source):
                async for message in source:
                    ready = (
                        [batches.flush()]
                        if message is TICK
                        else batches.feed(message.get("body", b""))
                    )
                    for events in ready:
                        if item := self._item(events):
                            yield item
            if item := self._item(batches.rest()):
                yield item

    def _item(self, events: list[bytes]) -> str | list:
        return sse_text(events) if self._settings.raw_openai_output else parsed_events(events)


async def call_app(app, method: str, path: str, body: bytes) -> AsyncIterator[dict]:
    """Call an ASGI app in-process and yield each message it sends, as soon as it sends it.

    httpx's ASGITransport would hold a streamed body until the end. Leaving this generator
    early answers the app's next `receive()` with a disconnect, which is how vLLM learns that
    a client left; the app then aborts the request and ends on its own.
    """
    scope = {
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
    sent: asyncio.Queue[dict | None] = asyncio.Queue()
    left = asyncio.Event()
    request: dict | None = {"type": "http.request", "body": body, "more_body": False}

    async def receive() -> dict:
        nonlocal request
        if request is not None:
            message, request = request, None
            return message
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.put_nowait(message)

    def ended(task: asyncio.Task) -> None:
        _calls.discard(task)
        sent.put_nowait(None)
        # Starlette re-raises an unhandled error after sending its 500 response.
        if not task.cancelled() and (error := task.exception()) is not None:
            logger.error("vLLM's OpenAI app failed on %s", path, exc_info=error)

    task = asyncio.create_task(app(scope, receive, send))
    _calls.add(task)
    task.add_done_callback(ended)
    try:
        while (message := await sent.get()) is not None:
            yield message
            if message["type"] == "http.response.body" and not message.get("more_body"):
                return  # the response is complete, whatever the app still does after it
    finally:
        left.set()


async def _body(messages: AsyncIterator[dict]) -> bytes:
    """The rest of a response body."""
    return b"".join([message.get("body", b"") async for message in messages])


class EventBatches:
    """Cuts an SSE byte stream into whole events and groups them by a batch policy.

    Chunks may end anywhere, even inside a multi-byte character; only complete events (vLLM
    ends each with a blank line) are handed on, so no yield ever carries part of an event.
    With the policy's `max_wait_s`, pending events also leave once the oldest has waited that
    long (`time_left`, then `flush`), as native streams do. vLLM opens a chat stream with an
    event per choice that only announces the role; those carry no token, so they ride along
    with the first batch instead of filling it.
    """

    def __init__(self, policy: BatchPolicy) -> None:
        self.max_wait_s = policy.max_wait_s
        self._sizes = policy.sizes()
        self._target = next(self._sizes)
        self._events: list[bytes] = []
        self._tail = b""
        self._first_at: float | None = None  # when the oldest pending event arrived
        self._opening = True  # no event with a token seen yet

    def feed(self, chunk: bytes) -> Iterator[list[bytes]]:
        """The batches this chunk completes (often none); events lack their blank line."""
        *complete, self._tail = (self._tail + chunk).split(_EVENT_END)
        if self._opening:
            for event in complete:
                if not _announces_role(event):
                    self._opening = False
                    break
                self._target += 1
        if complete and not self._events and self.max_wait_s:
            self._first_at = time.monotonic()
        self._events += complete
        while len(self._events) >= self._target:
            yield self._take(self._target)

    def time_left(self) -> float | None:
        """Seconds until the pending events must leave (None: nothing pending)."""
        if self._first_at is None:
            return None
        return max(0.0, self._first_at + self.max_wait_s - time.monotonic())

    def flush(self) -> list[bytes]:
        """Every pending event, as a batch of its own, when the wait is over."""
        return self._take(len(self._events))

    def _take(self, count: int) -> list[bytes]:
        batch, self._events = self._events[:count], self._events[count:]
        self._target = next(self._sizes)
        self._first_at = time.monotonic() if self._events and self.max_wait_s else None
        return batch

    def rest(self) -> list[bytes]:
        """The events left at the end of the stream; an unterminated tail counts as one."""
        return [*self._events, self._tail] if self._tail.strip() else self._events


def _announces_role(event: bytes) -> bool:
    """A chat chunk whose choices only say `role` (content empty, nothing finished)."""
    data = parsed_events([event])
    choices = data[0].get("choices") if data and isinstance(data[0], dict) else None
    if not choices:
        return False
    for choice in choices:
        delta = choice.get("delta")
        if not isinstance(delta, dict) or "role" not in delta or delta.keys() - {"role", "content"}:
            return False
        if delta.get("content") or choice.get("finish_reason") or choice.get("logprobs"):
            return False
    return True


def sse_text(events: list[bytes]) -> str:
    """Events as the SSE text vLLM sent (`RAW_OPENAI_OUTPUT=1`)."""
    return (_EVENT_END.join(events) + _EVENT_END).decode() if events else ""


def parsed_events(events: list[bytes]) -> list:
    """The JSON data of each event, leaving out `[DONE]` (`RAW_OPENAI_OUTPUT=0`)."""
    parsed = []
    for event in events:
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line[:5] == b"data:"]
        if lines and lines != [b"[DONE]"]:
            parsed.append(json.loads(b"\n".join(lines)))
    return parsed
