"""The local endpoint's HTTP app: RunPod's public API for users, its worker protocol for workers.

Public routes live under `/v2/{endpoint_id}/` exactly as on `api.runpod.ai`; the worker routes
under `/_worker/` speak what the runpod SDK's platform mode expects from `RUNPOD_WEBHOOK_*`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vllm_worker import sse
from vllm_worker.local.policy import PolicyError, parse_policy
from vllm_worker.local.store import DEFAULT_TTL_S, Job, JobStore, Status

#: How long `/stream` waits for a new item before answering with none.
STREAM_WAIT_S = 2.0
#: How long a worker's job-take and job-stop polls are held open.
POLL_WAIT_S = 10.0
#: `/runsync` waits this long by default, as the platform does; `?wait=ms` changes it.
RUNSYNC_WAIT_S = 90.0
RUNSYNC_MAX_WAIT_S = 300.0
#: Results of `/run` jobs are kept 30 minutes, of `/runsync` jobs 1 minute, as on the platform.
RUN_RETENTION_S = 30 * 60.0
RUNSYNC_RETENTION_S = 60.0
#: RunPod's payload limits: 10 MB for `/run`, 20 MB for `/runsync`. RunPod states none for its
#: OpenAI routes and the other operations; they get the lower, `/run` one.
RUN_MAX_BYTES = 10_000_000
RUNSYNC_MAX_BYTES = 20_000_000


def body_limit(path: str, cap: int | None = None) -> int:
    """The largest request body the public route at `path` takes, lowered to `cap` if given."""
    parts = path.split("/")  # "", "v2", endpoint id, operation, ...
    runsync = len(parts) == 4 and parts[1] == "v2" and parts[3] == "runsync"
    limit = RUNSYNC_MAX_BYTES if runsync else RUN_MAX_BYTES
    return min(limit, cap) if cap is not None else limit


async def _disconnected(request: Request) -> None:
    """Returns once the client has closed the connection."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Endpoint:
    """Routes of one local endpoint over a `JobStore`."""

    def __init__(
        self,
        store: JobStore,
        worker_alive: Callable[[], bool],
        execution_timeout_s: float,
        endpoint_id: str | None = None,
        worker_failure: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.store = store
        self.worker_alive = worker_alive
        self.worker_failure = worker_failure
        self.execution_timeout_s = execution_timeout_s
        self.endpoint_id = endpoint_id

    # --- helpers -----------------------------------------------------------------------

    async def _body(self, request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await parse_json_off_loop(await request.body() or b"{}")
        except ValueError as error:
            return _error(400, f"the request body is not usable JSON: {error}")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        return body

    def _job(self, request: Request) -> Job | JSONResponse:
        if (wrong := self._wrong_endpoint(request)) is not None:
            return wrong
        job = self.store.jobs.get(request.path_params["job_id"])
        return job if job is not None else _error(404, "request does not exist")

    def _wrong_endpoint(self, request: Request) -> JSONResponse | None:
        given = request.path_params.get("endpoint_id")
        if self.endpoint_id and given != self.endpoint_id:
            return _error(404, f"endpoint {given} does not exist")
        return None

    def _submit(self, body: dict[str, Any], retention_s: float) -> Job | JSONResponse:
        if "input" not in body:
            return _error(400, "the request body needs an `input` field")
        try:
            policy = parse_policy(body.get("policy"))
        except PolicyError as error:
            return _error(400, str(error))
        timeout_ms, ttl_ms = policy.execution_timeout_ms, policy.ttl_ms
        timeout_s = timeout_ms / 1000 if timeout_ms else self.execution_timeout_s
        ttl_s = ttl_ms / 1000 if ttl_ms else DEFAULT_TTL_S
        return self.store.submit(body["input"], timeout_s, retention_s, ttl_s)

    async def _new_job(self, request: Request, retention_s: float) -> Job | JSONResponse:
        if (wrong := self._wrong_endpoint(request)) is not None:
            return wrong
        body = await self._body(request)
        return body if isinstance(body, JSONResponse) else self._submit(body, retention_s)

    # --- public API --------------------------------------------------------------------

    async def run(self, request: Request) -> Response:
        job = await self._new_job(request, RUN_RETENTION_S)
        if isinstance(job, JSONResponse):
            return job
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def runsync(self, request: Request) -> Response:
        try:
            wait_s = float(request.query_params.get("wait", RUNSYNC_WAIT_S * 1000)) / 1000
        except ValueError:
            return _error(400, "wait must be a number of milliseconds")
        job = await self._new_job(request, RUNSYNC_RETENTION_S)
        if isinstance(job, JSONResponse):
            return job
        await _until_final(job, min(max(wait_s, 1.0), RUNSYNC_MAX_WAIT_S))
        return JSONResponse(job.view())

    async def status(self, request: Request) -> Response:
        job = self._job(request)
        return job if isinstance(job, JSONResponse) else JSONResponse(job.view())

    async def stream(self, request: Request) -> Response:
        """Items produced since the previous call, waiting briefly when there are none yet."""
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        if job.delivered == len(job.items) and not job.status.final:
            await job.wait(STREAM_WAIT_S)
        items, job.delivered = job.items[job.delivered :], len(job.items)
        body: dict[str, Any] = {
            "id": job.id,
            "status": job.status.value,
            "stream": [{"output": item} for item in items],
        }
        if job.error is not None:
            body["error"] = job.error
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        self.store.cancel(job)
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def retry(self, request: Request) -> Response:
        job = self._job(request)
        if isinstance(job, JSONResponse):
            return job
        if not self.store.retry(job):
            return _error(
                400, f"only FAILED or TIMED_OUT jobs can be retried (this one is {job.status})"
            )
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def health(self, request: Request) -> Response:
        if (wrong := self._wrong_endpoint(request)) is not None:
            return wrong
        return JSONResponse(self.store.health(self.worker_alive(), self.worker_failure()))

    async def purge_queue(self, request: Request) -> Response:
        if (wrong := self._wrong_endpoint(request)) is not None:
            return wrong
        return JSONResponse({"removed": self.store.purge_queue(), "status": "completed"})

    # --- OpenAI-compatible routes, relayed as openai_route jobs ------------------------

    async def openai(self, request: Request) -> Response:
        if (wrong := self._wrong_endpoint(request)) is not None:
            return wrong
        job_input: dict[str, Any] = {"openai_route": "/v1/" + request.path_params["path"]}
        body: Any = None
        if request.method == "POST":
            try:
                body = await parse_json_off_loop(await request.body())
            except ValueError as error:
                return _openai_error(400, f"the request body is not usable JSON: {error}")
            job_input["openai_input"] = body
        job = self.store.submit(job_input, self.execution_timeout_s, RUN_RETENTION_S)
        try:
            if isinstance(body, dict) and body.get("stream") is True:
                return await self._openai_stream(job)
            # Until the job ends, however long it queues: its execution timeout only counts
            # once it runs (the store times it out then), and answering earlier would fail a
            # job that has not failed, which clients retry, running it twice.
            if not await _until_final_or_gone(job, request):
                self.store.cancel(job)  # the client went away
                return _openai_error(499, "the client closed the request", "CancelledError")
        except asyncio.CancelledError:
            self.store.cancel(job)  # the client went away
            raise
        if job.status is Status.COMPLETED:
            first = job.output[0] if isinstance(job.output, list) and job.output else job.output
            return JSONResponse(first)
        return _openai_failure(job)

    async def _openai_stream(self, job: Job) -> Response:
        """An SSE response fed by the job's items as the worker yields them."""
        while not job.items and not job.status.final:
            await job.wait(POLL_WAIT_S)
        if not job.items and job.status is not Status.COMPLETED:
            return _openai_failure(job)

        async def events() -> AsyncIterator[bytes]:
            raw = True
            try:
                async for item in self.store.stream(job, POLL_WAIT_S):
                    raw = isinstance(item, str)
                    yield _as_sse(item)
                if job.status is not Status.COMPLETED:
                    failure = json.loads(bytes(_openai_failure(job).body))
                    yield sse.frame(failure)
                elif not raw:
                    yield sse.DONE + sse.EVENT_END
            finally:
                self.store.cancel(job)  # a no-op once finished; stops it if the client left

        return StreamingResponse(events(), media_type="text/event-stream")

    # --- the worker protocol of the runpod SDK (platform mode) -------------------------

    async def job_take(self, request: Request) -> Response:
        batch = request.url.path.split("/")[2] == "job-take-batch"
        count = _int(request.query_params.get("batch_size"), 1) if batch else 1
        take = asyncio.ensure_future(
            self.store.take(request.path_params["worker_id"], count, POLL_WAIT_S)
        )
        # A worker that stops cuts its poll short; jobs handed to the closed poll would be
        # IN_PROGRESS on a worker that never saw them.
        gone = asyncio.ensure_future(_disconnected(request))
        await asyncio.wait({take, gone}, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if not take.done():
            take.cancel()
            return Response(status_code=204)
        jobs = take.result()
        if not jobs:
            return Response(status_code=204)
        payload = [{"id": job.id, "input": job.input} for job in jobs]
        return JSONResponse(payload if batch else payload[0])

    async def job_stop(self, request: Request) -> Response:
        ids = await self.store.stops(request.path_params["worker_id"], POLL_WAIT_S)
        return JSONResponse({"jobsToStop": ids}) if ids else Response(status_code=204)

    async def job_stream(self, request: Request) -> Response:
        data = json.loads(await request.body())
        self.store.add_item(request.path_params["job_id"], data.get("output"))
        return Response(status_code=200)

    async def job_done(self, request: Request) -> Response:
        result = json.loads(await request.body())
        self.store.finish(request.path_params["job_id"], result)
        return Response(status_code=200)

    def routes(self) -> list[Route]:
        public = "/v2/{endpoint_id}"
        worker = "/_worker"
        both = ["GET", "POST"]
        return [
            Route(f"{public}/run", self.run, methods=["POST"]),
            Route(f"{public}/runsync", self.runsync, methods=["POST"]),
            Route(f"{public}/status/{{job_id}}", self.status, methods=both),
            Route(f"{public}/stream/{{job_id}}", self.stream, methods=both),
            Route(f"{public}/cancel/{{job_id}}", self.cancel, methods=["POST"]),
            Route(f"{public}/retry/{{job_id}}", self.retry, methods=["POST"]),
            Route(f"{public}/health", self.health, methods=["GET"]),
            Route(f"{public}/purge-queue", self.purge_queue, methods=["POST"]),
            Route(f"{public}/openai/v1/{{path:path}}", self.openai, methods=both),
            Route(f"{worker}/job-take/{{worker_id}}", self.job_take, methods=["GET"]),
            Route(f"{worker}/job-take-batch/{{worker_id}}", self.job_take, methods=["GET"]),
            Route(f"{worker}/job-stop/{{worker_id}}", self.job_stop, methods=["GET"]),
            Route(
                f"{worker}/job-stream/{{worker_id}}/{{job_id}}", self.job_stream, methods=["POST"]
            ),
            Route(f"{worker}/job-done/{{worker_id}}/{{job_id}}", self.job_done, methods=["POST"]),
        ]


#: Deepest nesting of arrays and objects accepted in a request body.
MAX_JSON_DEPTH = 64


def parse_json(raw: bytes) -> Any:
    """Parse a request body into JSON the worker can take back unchanged, or raise ValueError.

    Python's parser accepts what a job cannot survive on its way to the worker and back:
    NaN, Infinity and overflowing numbers, lone surrogates (not encodable as UTF-8), and
    nesting deep enough to exhaust the recursion limit. Such bodies are refused here with a
    clear message.
    """

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    def finite(text: str) -> float:
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"{text} is out of range")
        return number

    try:
        value = json.loads(raw, parse_constant=no_constant, parse_float=finite)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
        elif isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone surrogate (invalid Unicode)") from None
    return value


#: Bodies up to this size are parsed on the event loop: a thread costs more than they do.
_INLINE_PARSE_BYTES = 64 * 1024


async def parse_json_off_loop(raw: bytes) -> Any:
    """`parse_json` in a thread for large bodies: a 10 MB body takes the endpoint's loop, which
    relays every other job's stream, hundreds of milliseconds to parse and check."""
    if len(raw) <= _INLINE_PARSE_BYTES:
        return parse_json(raw)
    return await asyncio.to_thread(parse_json, raw)


async def _until_final(job: Job, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not job.status.final and (remaining := deadline - loop.time()) > 0:
        await job.wait(remaining)


async def _until_final_or_gone(job: Job, request: Request) -> bool:
    """Wait until `job` ends (True) or the client disconnects (False)."""

    async def ended() -> None:
        while not job.status.final:
            await job.wait(POLL_WAIT_S)

    finished = asyncio.ensure_future(ended())
    gone = asyncio.ensure_future(_disconnected(request))
    await asyncio.wait({finished, gone}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (finished, gone):
        waiter.cancel()
    return job.status.final


def _int(text: str | None, default: int) -> int:
    try:
        return max(int(text), 1) if text is not None else default
    except ValueError:
        return default


def _as_sse(item: Any) -> bytes:
    """One streamed item as SSE bytes: raw SSE text as is, parsed chunk objects re-framed."""
    if isinstance(item, str):
        return item.encode()
    chunks = item if isinstance(item, list) else [item]
    return b"".join(sse.frame(chunk) for chunk in chunks)


def _openai_error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status_code=status,
    )


def _openai_failure(job: Job) -> JSONResponse:
    """A failed OpenAI job as the OpenAI error (and HTTP status) the worker reported."""
    if job.status is Status.CANCELLED:
        return _openai_error(499, "the request was cancelled", "CancelledError")
    if job.status is Status.TIMED_OUT:
        return _openai_error(504, job.error or "the request timed out", "TimeoutError")
    try:
        parsed = json.loads(job.error or "")
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        inner = error if isinstance(error, dict) else parsed
        code = inner.get("code")
        if isinstance(code, int) and 400 <= code < 600:
            return JSONResponse(parsed, status_code=code)
    return _openai_error(500, job.error or "the job failed", "InternalServerError")


class Guard:
    """ASGI middleware: the API key on public routes, the worker token on worker routes,
    and each operation's size limit on request bodies (see `body_limit`)."""

    def __init__(
        self, app: ASGIApp, api_key: str | None, worker_token: str, max_body: int | None
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.worker_token = worker_token
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        path = scope["path"]
        if path.startswith("/_worker/"):
            if not hmac.compare_digest(request.query_params.get("token", ""), self.worker_token):
                return await _error(403, "unknown worker")(scope, receive, send)
            return await self.app(scope, receive, send)
        if self.api_key is not None:
            given = _credentials(request.headers.get("authorization", ""))
            if not hmac.compare_digest(given.encode(), self.api_key.encode()):
                return await _error(401, "Unauthorized: send Authorization: Bearer <key>")(
                    scope, receive, send
                )
        limit = body_limit(path, self.max_body)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await too_large(limit)(scope, receive, send)
        return await self.app(scope, _limited(receive, limit), send)


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive`, raising `_TooLarge` once the body read so far exceeds `limit` bytes."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge(limit)
        return message

    return limited


def _credentials(authorization: str) -> str:
    """The key of an `Authorization` header: after a `Bearer` scheme, whose name is
    case-insensitive (RFC 9110, section 11.1), or the whole value without one."""
    scheme, _, rest = authorization.strip().partition(" ")
    return rest.strip() if scheme.lower() == "bearer" else authorization.strip()


class _TooLarge(Exception):
    """A body without Content-Length turned out larger than the limit while being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


def too_large(limit: int) -> JSONResponse:
    return _error(413, f"the request body is larger than the limit of {limit:,} bytes")


def build_app(
    store: JobStore,
    worker_alive: Callable[[], bool],
    *,
    api_key: str | None,
    worker_token: str,
    execution_timeout_s: float,
    max_body_bytes: int | None = None,
    endpoint_id: str | None = None,
    lifespan: Callable | None = None,
    worker_failure: Callable[[], str | None] = lambda: None,
) -> ASGIApp:
    """The endpoint's ASGI app; `worker_failure` gives the worker's start-up failure, if any,
    for `/health`."""
    endpoint = Endpoint(store, worker_alive, execution_timeout_s, endpoint_id, worker_failure)

    async def on_too_large(request: Request, exc: Exception) -> Response:
        limit = exc.limit if isinstance(exc, _TooLarge) else body_limit(request.url.path)
        return too_large(limit)

    app = Starlette(
        routes=endpoint.routes(),
        exception_handlers={_TooLarge: on_too_large},
        lifespan=lifespan,
    )
    return Guard(app, api_key, worker_token, max_body_bytes)
