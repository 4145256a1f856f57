"""The worker process behind the local endpoint, started and watched as RunPod would.

The worker runs unchanged in the SDK's platform mode: the `RUNPOD_WEBHOOK_*` variables point
it at the local endpoint's worker routes instead of RunPod's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from vllm_worker.failed_worker import FAILURE_FILE_VAR
from vllm_worker.local.store import JobStore

logger = logging.getLogger(__name__)

#: Seconds a worker gets after SIGTERM beyond its own SHUTDOWN_GRACE_PERIOD (cancelling what
#: still runs, shutting the engine down) before it is killed.
STOP_MARGIN_S = 15.0
#: Seconds the endpoint stays up after its worker died, so clients can read the failures.
EXIT_GRACE_S = 3.0


def worker_environment(base: Mapping[str, str], url: str, token: str, worker_id: str) -> dict:
    """The worker's environment: the platform's webhook variables, and no user API key.

    Local model paths are made absolute because the worker runs in a folder of its own.
    """
    env = {k: v for k, v in base.items() if k not in ("RUNPOD_API_KEY", "LOCAL_ENDPOINT")}
    for var in ("MODEL_NAME", "TOKENIZER_NAME"):
        if env.get(var) and os.path.exists(env[var]):
            env[var] = os.path.abspath(env[var])
    query = f"?token={token}"
    env.update(
        RUNPOD_POD_ID=worker_id,
        RUNPOD_WEBHOOK_GET_JOB=f"{url}/_worker/job-take/$ID{query}",
        RUNPOD_WEBHOOK_POST_STREAM=f"{url}/_worker/job-stream/$RUNPOD_POD_ID/$ID{query}",
        RUNPOD_WEBHOOK_POST_OUTPUT=f"{url}/_worker/job-done/$RUNPOD_POD_ID/$ID{query}",
    )
    env.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    # The SDK's system checks probe a public DNS server; they are meant for platform hardware.
    env.setdefault("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "true")
    return env


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the worker if the endpoint dies without stopping it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _kill_group(pgid: int) -> None:
    """Kill what the worker left behind (vLLM's engine core outlives a killed parent)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class WorkerProcess:
    """Runs `python -m vllm_worker` and reports its death to the job store."""

    def __init__(
        self,
        store: JobStore,
        url: str,
        restart: bool,
        on_exit: Callable[[int], None],
        command: list[str] | None = None,
        shutdown_grace_s: float = 30.0,
    ) -> None:
        self.store = store
        self.stop_timeout_s = shutdown_grace_s + STOP_MARGIN_S
        self.url = url
        self.restart = restart
        self.on_exit = on_exit
        self.token = secrets.token_urlsafe(24)
        self.command = command or [sys.executable, "-m", "vllm_worker"]
        self.process: asyncio.subprocess.Process | None = None
        self._generation = 0
        self._stopping = False
        self.worker_id: str | None = None
        self._failure_file: str | None = None
        self._failure: str | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def start_up_failure(self) -> str | None:
        """Why the running worker cannot serve jobs (it fails each with this), or None.

        The worker writes it to a file in its folder (`failed_worker.report`) before it asks
        for its first job.
        """
        if self._failure is None and self._failure_file is not None and self.alive:
            with contextlib.suppress(OSError):
                self._failure = Path(self._failure_file).read_text() or None
        return self._failure if self.alive else None

    async def run(self) -> None:
        """Start the worker and keep watching it until it ends for good."""
        while True:
            self._generation += 1
            self.worker_id = f"local-worker-{self._generation}"
            env = worker_environment(os.environ, self.url, self.token, self.worker_id)
            # A fresh folder per worker, like a fresh container on the platform: the SDK keeps
            # its in-progress jobs in ./.runpod_jobs.pkl, and a stale one blocks a new worker.
            with tempfile.TemporaryDirectory(prefix=f"{self.worker_id}-") as folder:
                self._failure_file = env[FAILURE_FILE_VAR] = os.path.join(folder, "failure.txt")
                self._failure = None
                self.process = await asyncio.create_subprocess_exec(
                    *self.command,
                    env=env,
                    cwd=folder,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                code = await self.process.wait()
                _kill_group(self.process.pid)
            message = f"the worker process exited with code {code} while this job was running"
            self.store.worker_exited(None, message, fail_queued=not self.restart)
            if self._stopping:
                return
            if not self.restart:
                logger.error("worker exited with code %s; stopping the local endpoint", code)
                await asyncio.sleep(EXIT_GRACE_S)  # clients may still read the failed jobs
                self.on_exit(code or 1)
                return
            logger.error("worker exited with code %s; restarting it", code)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL once the worker's own grace period and a margin are over."""
        self.restart = False
        self._stopping = True
        process, worker_id = self.process, self.worker_id
        if process is None or worker_id is None or process.returncode is not None:
            return  # never started, or already ended
        process.send_signal(signal.SIGTERM)
        self.store.retire(worker_id)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout_s)
        except TimeoutError:
            process.kill()
            await process.wait()
        _kill_group(process.pid)
