"""Start `python -m vllm_worker.local` (endpoint and real worker) for tests, as `make run` does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalEndpoint:
    """A running local endpoint; `log` holds everything it and its worker printed."""

    def __init__(self, log: Path, api_key: str | None = "test-key", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v2/local"
        self.api_key = api_key
        self.log = log
        environ = {**os.environ, "PORT": str(self.port), **env}
        environ.pop("RUNPOD_API_KEY", None)
        if api_key:
            environ["RUNPOD_API_KEY"] = api_key
        self._log_file = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vllm_worker.local"],
            env=environ,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_ready(self, timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"local endpoint exited: {self.log.read_text()[-3000:]}")
            try:
                health = requests.get(f"{self.url}/health", headers=self.headers, timeout=5)
                if health.ok and health.json()["workers"]["idle"] >= 1:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the local endpoint's worker did not become ready")

    def health(self) -> dict:
        return requests.get(f"{self.url}/health", headers=self.headers, timeout=10).json()

    def most_in_progress(self, until_done: int) -> int:
        """The most jobs seen in progress at once, watching until `until_done` more ended.
        Run it in a thread beside the jobs."""
        start = self.health()["jobs"]
        most = 0
        while True:
            jobs = self.health()["jobs"]
            most = max(most, jobs["inProgress"])
            ended = jobs["completed"] + jobs["failed"] - start["completed"] - start["failed"]
            if ended >= until_done:
                return most
            time.sleep(0.05)

    def worker_pid(self) -> int:
        found = subprocess.run(
            ["pgrep", "-f", "-P", str(self.process.pid), "vllm_worker"],
            capture_output=True,
            text=True,
            check=True,
        )
        return int(found.stdout.split()[0])

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_file.close()
        return self.process.returncode
