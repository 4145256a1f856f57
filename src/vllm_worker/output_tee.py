"""What this process and its children print, relayed as usual and kept for a while in memory.

vLLM's engine core and model runner are child processes. When one fails at start-up, the
worker only sees "Engine core initialization failed. See root cause above": the cause (KV cache
too small, out of memory, a failed download) is what the child printed. vLLM logs to stdout by
default (`VLLM_LOGGING_STREAM`), tracebacks go to stderr, and spawned children inherit both file
descriptors. So `OutputTee` points descriptors 1 and 2 at pipes before the engine starts: a
thread per pipe writes everything on to the real stdout and stderr and keeps the last bytes, so
`startup_failure` can name the cause. Once start-up is over, `forget` stops the keeping; the
relay lasts as long as the process.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import select
import sys
import termios
import threading
import time

#: Bytes of output kept: the root cause is among the last things printed before the failure.
DEFAULT_LIMIT = 256 * 1024
_CHUNK = 64 * 1024


class OutputTee:
    """Relays file descriptors (1 and 2 by default) through pipes, keeping their last bytes."""

    def __init__(self, fds: tuple[int, ...] = (1, 2), limit: int = DEFAULT_LIMIT) -> None:
        self._fds = fds
        self._limit = limit
        self._kept = bytearray()
        self._keeping = True
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._relays: list[threading.Thread] = []
        self._read_ends: list[int] = []
        self._holding: set[int] = set()  # pipes whose relay has read a chunk not yet kept

    def start(self) -> OutputTee:
        """Route the descriptors through the pipes; everything printed from now on is kept."""
        _flush()
        for fd in self._fds:
            real = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            self._saved[fd] = real
            self._read_ends.append(read_end)
            relay = threading.Thread(
                target=self._relay, args=(read_end, real), name=f"output-tee-{fd}", daemon=True
            )
            relay.start()
            self._relays.append(relay)
        return self

    def text(self, drain_s: float = 0.5) -> str:
        """The last output kept (every descriptor interleaved, in arrival order), once what
        was written before this call has been relayed (waiting at most `drain_s`)."""
        deadline = time.monotonic() + drain_s
        while not self._drained() and time.monotonic() < deadline:
            time.sleep(0.002)
        with self._lock:
            return self._kept.decode(errors="replace")

    def _drained(self) -> bool:
        """No byte waits in a pipe, and no relay holds one it has read but not yet kept."""
        if self._holding:
            return False
        for read_end in list(self._read_ends):
            pending = array.array("i", [0])
            try:
                fcntl.ioctl(read_end, termios.FIONREAD, pending)
            except OSError:
                continue  # that relay has ended
            if pending[0]:
                return False
        return True

    def forget(self) -> None:
        """Stop keeping output (start-up is over); the relay goes on."""
        with self._lock:
            self._keeping = False
            self._kept = bytearray()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Give the real descriptors back and relay what is still in the pipes.

        Children that still hold a pipe (the SDK's heartbeat process) keep it open; the relays
        end once they exit, or are left behind (daemon threads) after `timeout_s` in all.
        """
        _flush()
        for fd, real in self._saved.items():
            os.dup2(real, fd)  # closes this process's write end of the pipe
        deadline = time.monotonic() + timeout_s
        for relay in self._relays:
            relay.join(max(0.0, deadline - time.monotonic()))

    def _relay(self, read_end: int, real: int) -> None:
        """Copy the pipe to the real descriptor until every writer closed it. A real
        descriptor that fails (a closed terminal) is given up, but the pipe is still drained:
        writers must never block on a full pipe."""
        relaying = True
        readable = select.poll()
        readable.register(read_end, select.POLLIN)
        while True:
            # Marked as holding before the bytes leave the pipe: `_drained` always finds
            # them in one place or the other.
            readable.poll()
            self._holding.add(read_end)
            chunk = _read(read_end)
            if not chunk:
                self._holding.discard(read_end)
                break
            self._keep(chunk)
            self._holding.discard(read_end)
            view = memoryview(chunk)
            while relaying and view:
                try:
                    view = view[os.write(real, view) :]
                except OSError:
                    relaying = False
        self._read_ends.remove(read_end)  # before its number can be reused
        os.close(read_end)

    def _keep(self, chunk: bytes) -> None:
        with self._lock:
            if not self._keeping:
                return
            self._kept += chunk
            if len(self._kept) > self._limit:
                del self._kept[: len(self._kept) - self._limit]


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, _CHUNK)
    except OSError:
        return b""


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
