"""A bounded graceful stop: on SIGTERM, running jobs get a grace period, then are cancelled.

The runpod SDK already stops taking jobs on SIGTERM, but then waits for the running ones
without any limit, while the platform kills a container that does not exit in time. The SDK
installs its own SIGTERM handler when its job loop starts; this thread finds that job loop
through the handler, waits for it to begin stopping, and after the grace period cancels the
jobs still running (each aborts its vLLM request), so the loop ends and the worker exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading

logger = logging.getLogger(__name__)


class GracefulStop(threading.Thread):
    def __init__(self, grace_s: float, poll_s: float = 0.2) -> None:
        super().__init__(name="graceful-stop", daemon=True)
        self._grace_s = grace_s
        self._poll_s = poll_s
        self._done = threading.Event()

    def run(self) -> None:
        scaler = None
        while scaler is None:
            if self._done.wait(self._poll_s):
                return
            handler = signal.getsignal(signal.SIGTERM)
            owner = getattr(handler, "__self__", None)
            if hasattr(owner, "jobs_tasks") and hasattr(owner, "is_alive"):
                scaler = owner
        while scaler.is_alive():
            if self._done.wait(self._poll_s):
                return
        running = list(scaler.jobs_tasks.values())
        logger.info("stopping: %d running job(s) get %.0f s to finish", len(running), self._grace_s)
        if self._done.wait(self._grace_s):
            return
        left = [task for task in scaler.jobs_tasks.values() if not task.done()]
        if left:
            logger.warning("grace period over: cancelling %d job(s)", len(left))
        for task in left:
            task.get_loop().call_soon_threadsafe(task.cancel)

    def stop(self) -> None:
        self._done.set()
