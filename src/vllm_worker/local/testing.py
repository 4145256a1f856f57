"""Drive a local endpoint in a subprocess: the harness of the tests and of `make bench`.

Shipped in the package as starlette ships `testclient`, so tests, benchmarks and users start
and watch the endpoint one way::

    from vllm_worker.local.testing import LocalEndpoint

    with LocalEndpoint(tmp_path / "endpoint.log", MAX_CONCURRENCY="8") as endpoint:
        endpoint.wait_ready()
        job_id = endpoint.run({"prompt": "Hello", "sampling_params": {"max_tokens": 5}})
        print(endpoint.wait_final(job_id)["output"])

`LocalEndpoint` runs `python -m vllm_worker.local` exactly as `make run` does: the endpoint and,
behind it, the real worker with its own vLLM engine (so only where an engine may start). It
listens on a free loopback port and is called over HTTP with httpx.

Every wait here has a deadline: when it passes, the wait raises `TimeoutError` saying what it
waited for and what it saw last. A wait that depends on the endpoint raises `EndpointExited`
as soon as the endpoint process has ended, instead of running into its deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

__all__ = ["DEFAULT_API_KEY", "EndpointExited", "LocalEndpoint", "free_port", "wait_until"]

#: The API key a `LocalEndpoint` requires unless given another one (or `None`, for none).
DEFAULT_API_KEY = "test-key"
#: Statuses after which a job never changes again.
FINAL_STATUSES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
#: Characters of the endpoint's log quoted in errors.
_LOG_TAIL = 3000

T = TypeVar("T")


class EndpointExited(RuntimeError):
    """The endpoint process ended while something waited on it; the message quotes its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at `host` right now, chosen by the OS.

    Another process could take it before the caller binds it; on a test machine that is rare
    enough to ignore.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str | Callable[[], str],
    interval_s: float = 0.05,
) -> T:
    """Call `condition()` every `interval_s` seconds until it returns something truthy; return it.

    For states that no event announces: a job's status, a log line, a process count.

    Args:
        condition: called with no arguments; exceptions it raises propagate at once.
        timeout_s: seconds until the deadline, counted from this call.
        what: what is awaited, for the error message; a callable is called once the deadline
            has passed, so it can describe the last state seen.
        interval_s: seconds between two calls.

    Raises:
        TimeoutError: `condition()` was still falsy at the deadline (it is always called at
            least once, and once more at the deadline).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            described = what() if callable(what) else what
            raise TimeoutError(f"waited {timeout_s:g} s for {described}")
        time.sleep(min(interval_s, left))


class LocalEndpoint:
    """A running `python -m vllm_worker.local` process: the endpoint, its worker and engine.

    The process starts in the constructor, in a session (process group) of its own, with the
    caller's environment minus `RUNPOD_API_KEY`, `ENDPOINT_ID` and `HOST`, plus `env`, plus
    `PORT` (a free port) and, when `api_key` is given, `RUNPOD_API_KEY`. Everything the
    endpoint and its worker print goes to `log`. Call `wait_ready` before sending jobs and
    `stop` (or leave a `with` block) at the end.

    Args:
        log: file the endpoint's stdout and stderr are written to (replaced if it exists).
        api_key: the key every request must carry (`Authorization: Bearer <key>`; by default
            `DEFAULT_API_KEY`), or `None` for an endpoint without a key (loopback only).
        **env: extra environment variables for the endpoint and its worker, such as
            `MAX_CONCURRENCY="8"` or `MODEL_NAME=...`; a value of `None` removes the variable
            from the inherited environment. `ENDPOINT_ID` changes `url`; `HOST` must keep
            accepting connections on 127.0.0.1 (`127.0.0.1` or `0.0.0.0`).
        command: what to run instead of `python -m vllm_worker.local`, in the same environment
            (a stand-in endpoint, to test this harness without an engine).

    Raises:
        ValueError: `env` sets `PORT` or `RUNPOD_API_KEY` (the port is chosen here; pass the
            key as `api_key`).

    Attributes:
        url: the endpoint's base URL, `http://127.0.0.1:<port>/v2/<endpoint id>`, without a
            trailing slash; routes such as `run` or `openai/v1` go after it.
        port: the TCP port it listens on.
        api_key: as given.
        log: as given, as a `Path`.
        process: the endpoint's `subprocess.Popen`.
        spawned: wall-clock time (`time.time()`, epoch seconds) just before the process was
            started, the zero of a cold start.
    """

    def __init__(
        self,
        log: Path | str,
        api_key: str | None = DEFAULT_API_KEY,
        *,
        command: Sequence[str] | None = None,
        **env: str | None,
    ) -> None:
        if {"PORT", "RUNPOD_API_KEY"} & set(env):
            raise ValueError("LocalEndpoint chooses PORT itself and takes the key as api_key")
        self.log = Path(log)
        self.api_key = api_key
        self.port = free_port()
        environ = dict(os.environ)
        for var in ("RUNPOD_API_KEY", "ENDPOINT_ID", "HOST"):  # loopback, no key, any id
            environ.pop(var, None)
        for name, value in env.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        if api_key:
            environ["RUNPOD_API_KEY"] = api_key
        environ["PORT"] = str(self.port)
        self.url = f"http://127.0.0.1:{self.port}/v2/{environ.get('ENDPOINT_ID') or 'local'}"
        self._clients: list[httpx.Client] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self.spawned = time.time()
        with self.log.open("w") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                list(command or [sys.executable, "-m", "vllm_worker.local"]),
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> LocalEndpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- HTTP ----------------------------------------------------------------------------

    @property
    def headers(self) -> dict[str, str]:
        """The `Authorization` header the endpoint requires, or `{}` when it has no key."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _client(self) -> httpx.Client:
        # One client per thread (`most_in_progress` runs beside the caller's requests), kept:
        # creating an httpx client loads the CA bundle, about 25 ms of CPU each time.
        client = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(headers=self.headers, trust_env=False)  # loopback: no proxy
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def request(
        self, method: str, route: str, json: object = None, timeout_s: float = 30
    ) -> httpx.Response:
        """Send `method` to `<url>/<route>` with the key, and `json` as the body when not None.

        Returns the response whatever its status. Raises `EndpointExited` when the endpoint
        cannot be reached because its process has ended, and httpx's errors otherwise.
        """
        try:
            return self._client().request(
                method, f"{self.url}/{route}", json=json, timeout=timeout_s
            )
        except httpx.TransportError:
            self._check_alive()
            raise

    def _json(self, method: str, route: str, json: object = None) -> dict[str, Any]:
        response = self.request(method, route, json)
        if response.is_error:
            raise RuntimeError(f"{method} {route}: HTTP {response.status_code} {response.text}")
        body: dict[str, Any] = response.json()
        return body

    def health(self) -> dict[str, Any]:
        """`GET /health`: `{"jobs": {"completed", "failed", "inProgress", "inQueue", "retried"},
        "workers": {"idle", "running", "initializing", "unhealthy"}}`, all counts, and
        `workers.startUpFailure` (the sentence every job fails with) only while the worker runs
        but could not start.

        Raises RuntimeError on an HTTP error status (a wrong key gives 401).
        """
        return self._json("GET", "health")

    def run(self, job_input: object, **fields: object) -> str:
        """`POST /run` with `{"input": job_input, **fields}` (such as `policy=`); the job id."""
        return str(self._json("POST", "run", {"input": job_input, **fields})["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        """`GET /status/<job_id>`: `{"id", "status", "delayTime"?, "executionTime"?, "output"?,
        "error"?}` (times in ms)."""
        return self._json("GET", f"status/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        """`POST /cancel/<job_id>`: `{"id", "status"}`, the status after the cancel."""
        return self._json("POST", f"cancel/{job_id}")

    # --- waits ---------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise EndpointExited(
                f"the local endpoint exited with code {self.process.returncode}; the end of "
                f"{self.log}:\n{self.log_text()[-_LOG_TAIL:]}"
            )

    def wait_ready(self, timeout_s: float = 300, poll_s: float = 0.05) -> float:
        """Wait until a worker takes jobs (it has polled the endpoint and is alive).

        Args:
            timeout_s: seconds until the deadline (an engine start on CPU takes 20-40 s).
            poll_s: seconds between two `/health` calls; it bounds how late readiness is seen.

        Returns:
            The wall-clock time (`time.time()`, epoch seconds) readiness was seen.

        Raises:
            EndpointExited: the endpoint process ended first.
            TimeoutError: no worker was ready at the deadline.
            RuntimeError: `/health` answered an HTTP error (such as 401 for a wrong key).
        """

        def ready() -> float | None:
            self._check_alive()
            try:
                workers = self.health()["workers"]
            except httpx.TransportError:  # not listening yet
                return None
            return time.time() if workers["idle"] + workers["running"] >= 1 else None

        return wait_until(
            ready, timeout_s, f"a worker of the local endpoint; see {self.log}", poll_s
        )

    def wait_final(self, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
        """Poll `/status` until the job ends; return that body (see `status`).

        Raises TimeoutError, naming the last status, when it has not ended at the deadline.
        """
        last: dict[str, Any] = {}

        def ended() -> dict[str, Any] | None:
            last.update(self.status(job_id))
            return dict(last) if last["status"] in FINAL_STATUSES else None

        return wait_until(ended, timeout_s, lambda: f"job {job_id} to end; last: {last}", 0.1)

    def wait_stream(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        """Call `/stream` until an answer carries items or the job has ended; return it.

        The body is `{"id", "status", "stream": [{"output": item}, ...], "error"?}`; each call
        returns the items produced since the previous one (so these are the first ones when
        nobody else reads the stream). Raises TimeoutError at the deadline.
        """

        def answered() -> dict[str, Any] | None:
            body = self._json("POST", f"stream/{job_id}")
            return body if body["stream"] or body["status"] in FINAL_STATUSES else None

        return wait_until(answered, timeout_s, f"a streamed item of job {job_id}", 0)

    def log_text(self) -> str:
        """Everything the endpoint and its worker have printed so far."""
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout_s: float = 60, start: int = 0) -> re.Match[str]:
        """Wait for the regular expression `pattern` in the log, from character `start` on
        (take `len(endpoint.log_text())` before an action to see only what follows it).

        Returns the match, its positions relative to `start`. Raises TimeoutError at the
        deadline, and EndpointExited when the endpoint process ended without printing it.
        """

        def found() -> re.Match[str] | None:
            exited = self.process.poll() is not None
            match = re.search(pattern, self.log_text()[start:])
            if match is None and exited:
                self._check_alive()
            return match

        return wait_until(found, timeout_s, f"a log line matching {pattern!r} in {self.log}", 0.1)

    def jobs_ended(self) -> int:
        """How many jobs ended COMPLETED, FAILED or TIMED_OUT so far (cancelled ones are not
        counted), from `/health`."""
        jobs = self.health()["jobs"]
        return int(jobs["completed"] + jobs["failed"])

    def most_in_progress(
        self, until_done: int, timeout_s: float = 600, since: int | None = None
    ) -> int:
        """The most jobs seen IN_PROGRESS at once, sampling `/health` every 50 ms until
        `until_done` more jobs have ended (see `jobs_ended`). Run it in a thread beside the jobs.

        Args:
            until_done: how many jobs must end (completed or failed) before it returns.
            timeout_s: seconds until the deadline.
            since: the `jobs_ended()` count to start from; read it before submitting the jobs,
                or one that ends before this call samples would be missed. Read now when None.

        Raises:
            TimeoutError: fewer than `until_done` ended by the deadline.
        """
        start = self.jobs_ended() if since is None else since
        most, ended = 0, 0

        def done() -> bool:
            nonlocal most, ended
            jobs = self.health()["jobs"]
            most = max(most, jobs["inProgress"])
            ended = jobs["completed"] + jobs["failed"] - start
            return ended >= until_done

        wait_until(
            done, timeout_s, lambda: f"{until_done} jobs to end; {ended} did (most at once {most})"
        )
        return most

    # --- processes -----------------------------------------------------------------------

    def worker(self) -> psutil.Process:
        """The worker process (`python -m vllm_worker`, a child of the endpoint).

        Raises RuntimeError unless there is exactly one (none between a death and a restart).
        """
        children = psutil.Process(self.process.pid).children()
        workers = [p for p in children if "vllm_worker" in " ".join(_cmdline(p))]
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker process, found {workers}")
        return workers[0]

    def worker_pid(self) -> int:
        """The worker's process id (see `worker`)."""
        return int(self.worker().pid)

    def engine_core(self) -> psutil.Process:
        """vLLM's engine core process, a descendant of the worker.

        Raises RuntimeError when the worker has none (its engine is not up, or it died).
        """
        worker = self.worker()
        for child in worker.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # one that just ended is not it
                if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
                    return child
        raise RuntimeError(f"no EngineCore process under the worker (pid {worker.pid})")

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM the endpoint's process group (endpoint, worker, engine), as Ctrl-C does, and
        SIGKILL it when it has not exited after `timeout_s` seconds; return the endpoint's exit
        code (negative: killed by that signal). Safe to call again, or after it exited."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        return self.process.returncode


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile, or not ours to read
        return []
