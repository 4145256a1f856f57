"""OpenAI-compatible jobs, served in-process by vLLM's own OpenAI app on the worker's engine.

RunPod turns a call to `.../openai/v1/<path>` into a job whose input is
`{"openai_route": "/v1/<path>", "openai_input": <request body>}`. vLLM's app already does
everything an OpenAI server does (request validation, chat templates, tool-call and reasoning
parsers, OpenAI-style errors), so this kind only carries the job to that app and its response
back: a JSON body becomes the job's one item. A stream is batched before vLLM's serving layer
sees it, by the batcher native jobs use (`coalesce`): each engine batch becomes one SSE event
per choice, and the events of one batch one item.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from http import HTTPStatus
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from vllm_worker import adapters, asgi, input_bound, sse, vllm_errors
from vllm_worker.batching import policy_for
from vllm_worker.coalesce import stream_policy
from vllm_worker.config import WorkerSettings
from vllm_worker.errors import JobError, JobInputError, validate
from vllm_worker.input_bound import InputTooLarge
from vllm_worker.kinds import JobStats
from vllm_worker.serving import Serving, ServingError, ServingState

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: What an OpenAI job yields: the response JSON (not streaming); SSE text (streaming); or,
#: with `RAW_OPENAI_OUTPUT=false`, the list of the stream's chunk objects.
OpenAIItem = dict[str, Any] | str | list[Any]

#: The last events of a stream read for its log line: its usage chunk, finish chunks, [DONE].
_COUNTED_EVENTS = 8
#: Choices beyond this index are left out of the log line's finish reasons.
_MAX_CHOICES = 64


class OpenAIError(JobError):
    """A failed OpenAI job; the message is the JSON of an OpenAI error object."""


class OpenAIJob(BaseModel):
    """An OpenAI job's input: the route, its request body, and optional stream batching."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    openai_route: str = Field(description="Route of vLLM's OpenAI app, e.g. /v1/chat/completions.")
    openai_input: dict[str, Any] | None = Field(
        None, description="The request body; none for GET routes such as /v1/models."
    )
    max_batch_size: int | None = Field(None, ge=1, description="Most SSE events per yield.")
    min_batch_size: int | None = Field(None, ge=1, description="SSE events in the first yield.")
    batch_size_growth_factor: float | None = Field(None, ge=1, description="Yield size growth.")


def in_worker_terms(body: bytes) -> str:
    """An error body of vLLM's app with its message in the worker's terms (variables, not
    flags: see `vllm_errors`); its JSON shape and status code stay vLLM's."""
    text = body.decode(errors="replace")
    try:
        response = json.loads(text)
    except ValueError:
        return text
    error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return text
    error["message"] = vllm_errors.in_worker_terms(error["message"])
    return json.dumps(response)


def error_json(message: str, err_type: str, status: HTTPStatus, param: str | None = None) -> str:
    """An error the worker raises itself, in the shape of vLLM's own OpenAI errors."""
    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    return create_error_response(message, err_type, status, param).model_dump_json()


def parse_openai(raw: object) -> OpenAIJob:
    """Validate an OpenAI job's input or raise `OpenAIError`."""
    try:
        return validate(OpenAIJob, raw)
    except JobInputError as error:
        raise OpenAIError(
            error_json(str(error), "BadRequestError", HTTPStatus.BAD_REQUEST)
        ) from None


class OpenAIKind:
    """The job kind of inputs with `openai_route`."""

    def __init__(self, serving: Serving, settings: WorkerSettings) -> None:
        self._serving = serving
        self._settings = settings

    def route(self, job_input: object) -> str | None:
        if isinstance(job_input, dict) and "openai_route" in job_input:
            return str(job_input["openai_route"])
        return None

    async def parse(self, job_input: object) -> OpenAIJob:
        """The job, once its request body is known to lie within the model's input bound
        (vLLM's own validation of a far larger one would hold the event loop for seconds)."""
        job = parse_openai(job_input)
        if job.openai_input is not None:
            try:
                input_bound.of(await self._state()).check(job.openai_input)
            except InputTooLarge as error:
                raise OpenAIError(
                    error_json(str(error), "BadRequestError", HTTPStatus.BAD_REQUEST, error.field)
                ) from None
            await self._check_model(job.openai_input.get("model"))
        return job

    async def _check_model(self, name: object) -> None:
        """Make sure the body's `model` is served, loading the adapter it names first with
        `LORA_LOAD_ON_DEMAND`, so that vLLM's app then finds it (see `adapters`)."""
        if not isinstance(name, str):
            return  # vLLM's request validation reports it
        state = await self._state()
        try:
            await adapters.lora_request(state.models, name, self._settings.lora_load_on_demand)
        except adapters.AdapterError as error:
            raise OpenAIError(
                error_json(error.reason, error.err_type, error.status, "model")
            ) from None

    async def _state(self) -> ServingState:
        try:
            return await self._serving.state()
        except ServingError as error:
            raise OpenAIError(
                error_json(str(error), "InternalServerError", HTTPStatus.INTERNAL_SERVER_ERROR)
            ) from error

    async def run(self, job: OpenAIJob, job_id: str, stats: JobStats) -> AsyncGenerator[OpenAIItem]:
        """Serve one job: the response JSON, or its SSE stream in batches of whole events.

        Closing this generator tells vLLM's app that the client left, and vLLM aborts the
        request, as it does for a dropped HTTP connection.
        """
        state = await self._state()
        method = state.routes.get(job.openai_route)
        if method is None:
            raise OpenAIError(
                error_json(
                    f"openai_route {job.openai_route} is not served; supported routes: "
                    + ", ".join(sorted(state.routes)),
                    "NotFoundError",
                    HTTPStatus.NOT_FOUND,
                    "openai_route",
                )
            )
        body = b"" if job.openai_input is None else json.dumps(job.openai_input).encode()
        # vLLM's app streams through `BatchingEngineClient`, which batches by this policy.
        context = contextvars.copy_context()
        context.run(stream_policy.set, policy_for(job, self._settings))
        call = asgi.call(state.app, method, job.openai_route, body, context)
        async with aclosing(call) as sent:
            start, *first = await anext(sent)
            if start["status"] >= 400:
                raise OpenAIError(in_worker_terms(asgi.body_of(first) + await asgi.read_body(sent)))
            content_type = dict(start["headers"]).get(b"content-type", b"")
            if not content_type.startswith(b"text/event-stream"):
                response = json.loads(asgi.body_of(first) + await asgi.read_body(sent))
                _count(response, stats)
                yield response
                return
            events = Events()
            last: list[bytes] = []
            async for messages in _prepend(first, sent):
                if batch := events.feed(asgi.body_of(messages)):
                    last = (last + batch)[-_COUNTED_EVENTS:]
                    yield self._item(batch)
            if batch := events.rest():
                last = (last + batch)[-_COUNTED_EVENTS:]
                yield self._item(batch)
            _count_stream(last, stats)

    def _item(self, events: list[bytes]) -> str | list[Any]:
        return sse.encode(events) if self._settings.raw_openai_output else sse.values(events)


def _count(response: object, stats: JobStats) -> None:
    """Token counts and finish reasons from a response (or a stream's usage chunk)."""
    if not isinstance(response, dict):
        return
    usage = response.get("usage")
    if isinstance(usage, dict):
        stats.prompt_tokens = usage.get("prompt_tokens", stats.prompt_tokens)
        stats.output_tokens = usage.get("completion_tokens", stats.output_tokens)
    for position, choice in enumerate(response.get("choices") or ()):
        if not isinstance(choice, dict) or not choice.get("finish_reason"):
            continue
        index = choice.get("index", position)
        if isinstance(index, int) and 0 <= index < _MAX_CHOICES:
            missing = index + 1 - len(stats.finish_reasons)
            stats.finish_reasons.extend([None] * missing)
            stats.finish_reasons[index] = choice["finish_reason"]


def _count_stream(events: list[bytes], stats: JobStats) -> None:
    """Counts from the last events of a stream, read once at its end: usage when the client
    asked for it (`stream_options.include_usage`), and the finish reasons."""
    for event in events:
        try:
            _count(sse.data(event), stats)
        except ValueError:  # not JSON: nothing to count
            continue


class Events:
    """Cuts an SSE byte stream into whole events, for items that never carry part of one.

    vLLM writes the events of one engine output (one per choice, each carrying a whole batch
    of tokens, see `coalesce`) at once, and each such write becomes one item. Body chunks may
    still end anywhere, even inside a multi-byte character: only complete events are handed on.
    A chat stream opens with an event per choice that only announces the role; those carry no
    token, so they ride along with the first batch instead of making an item of their own.
    """

    def __init__(self) -> None:
        self._tail = b""
        self._held: list[bytes] = []  # role-only opening events
        self._opening = True  # no event with a token seen yet

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events this chunk completes, to send now (often all of them, maybe none)."""
        complete, self._tail = sse.split(self._tail + chunk)
        if self._opening:
            if all(_announces_role(event) for event in complete):
                self._held += complete
                return []
            self._opening = False
            complete, self._held = self._held + complete, []
        return complete

    def rest(self) -> list[bytes]:
        """The events left at the end of the stream; an unterminated tail counts as one."""
        tail = [self._tail] if self._tail.strip() else []
        return [*self._held, *tail]


async def _prepend(first: list[T], rest: AsyncIterator[list[T]]) -> AsyncGenerator[list[T]]:
    if first:
        yield first
    async for item in rest:
        yield item


def _announces_role(event: bytes) -> bool:
    """A chat chunk whose choices only say `role` (content empty, nothing finished)."""
    try:
        data = sse.data(event)
    except ValueError:
        return False
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices:
        return False
    for choice in choices:
        delta = choice.get("delta")
        if not isinstance(delta, dict) or "role" not in delta or delta.keys() - {"role", "content"}:
            return False
        if delta.get("content") or choice.get("finish_reason") or choice.get("logprobs"):
            return False
    return True
