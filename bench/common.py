"""What every phase shares: the workload, the request loop, and what one phase measured.

A *path* is how a request reaches the engine (raw vLLM, the handler, the local endpoint). It is
an async iterator yielding the number of new output tokens in each item the client receives, so
that the client does the least possible work inside the measured window; all statistics are
computed afterwards from the timestamps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import psutil

#: Every request asks for the same chat turn and exactly `max_tokens` tokens.
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
CONCURRENCIES = (16, 1)
#: Share of the machine's CPU that other processes may use during a phase before it is redone.
MAX_FOREIGN = 0.05
ATTEMPTS = 3
#: Longest wait, per phase, for another vLLM engine on the machine to finish.
QUIET_WAIT_S = 300

Path = Callable[[int, int], AsyncIterator[int]]  # (request index, max_tokens) -> tokens per item


@dataclasses.dataclass(frozen=True)
class Workload:
    """One model and how many requests each phase sends."""

    name: str
    title: str
    model: str | None  # MODEL_NAME; None serves the worker's default model
    max_tokens: int
    requests: dict[int, int]  # concurrency -> requests per phase
    rounds: int  # each phase is repeated, interleaved with the others, to even out noise

    def env(self) -> dict[str, str]:
        return {"MODEL_NAME": self.model} if self.model else {}


def sampling_params(max_tokens: int) -> dict[str, Any]:
    """Fixed-length greedy outputs: every path produces the same tokens."""
    return {"temperature": 0, "max_tokens": max_tokens, "ignore_eos": True}


def native_input(stream: bool, max_tokens: int) -> dict[str, Any]:
    return {"messages": MESSAGES, "sampling_params": sampling_params(max_tokens), "stream": stream}


def openai_body(model: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": MESSAGES,
        **sampling_params(max_tokens),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclasses.dataclass
class Trace:
    """One request: when it was sent and when each item arrived with how many tokens."""

    start: float
    points: list[tuple[float, int]]


async def drive(path: Path, requests: int, concurrency: int, max_tokens: int):
    """Send `requests` requests, `concurrency` at a time; return the traces and wall time."""
    indexes = iter(range(requests))
    traces: list[Trace] = []

    async def client() -> None:
        for index in indexes:
            trace = Trace(time.perf_counter(), [])
            async for tokens in path(index, max_tokens):
                trace.points.append((time.perf_counter(), tokens))
            traces.append(trace)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return traces, time.perf_counter() - started


def record(traces: list[Trace], wall_s: float, max_tokens: int, usage: dict) -> dict[str, Any]:
    """One phase's numbers; fails if any request did not produce exactly `max_tokens`."""
    ttft, gaps = [], []
    for trace in traces:
        got = sum(tokens for _, tokens in trace.points)
        if got != max_tokens:
            raise RuntimeError(f"a request produced {got} tokens, not {max_tokens}")
        arrivals = [t for t, tokens in trace.points if tokens]
        ttft.append(arrivals[0] - trace.start)
        gaps += [b - a for a, b in itertools.pairwise(arrivals)]
    return {
        "requests": len(traces),
        "tokens": len(traces) * max_tokens,
        "wall_s": wall_s,
        "items": sum(len(trace.points) for trace in traces),
        "ttft_s": ttft,
        "gaps_s": gaps,
        **usage,
    }


class Monitor:
    """CPU time and peak resident memory of named groups of processes, over one `with` block.

    CPU times are user + system of the listed processes themselves, without other children.
    A group's memory is the sum of its processes' RSS (shared pages count once per process),
    sampled every 50 ms, so a peak shorter than that may be missed. It also measures the
    machine's CPU time used outside the groups (`foreign`) and taken by the hypervisor
    (`steal`), as shares of the machine's capacity: the engine keeps every core busy, so any
    other work on the machine slows the phase down.
    """

    def __init__(self, groups: dict[str, list[psutil.Process]], interval_s: float = 0.05) -> None:
        self._groups = groups
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0: dict[str, float] = {}
        self._machine0 = psutil.cpu_times()
        self._started = 0.0
        self.peak_rss = dict.fromkeys(groups, 0)
        self.cpu_s: dict[str, float] = {}
        self.foreign = self.steal = 0.0

    def _cpu(self) -> dict[str, float]:
        return {
            name: sum((times := proc.cpu_times()).user + times.system for proc in procs)
            for name, procs in self._groups.items()
        }

    def _sample(self) -> None:
        while True:
            for name, procs in self._groups.items():
                rss = sum(proc.memory_info().rss for proc in procs)
                self.peak_rss[name] = max(self.peak_rss[name], rss)
            if self._stop.wait(self._interval_s):
                return

    def __enter__(self) -> Monitor:
        self._cpu0, self._machine0 = self._cpu(), psutil.cpu_times()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        machine, capacity = psutil.cpu_times(), (time.perf_counter() - self._started)
        capacity *= psutil.cpu_count()
        self.cpu_s = {name: value - self._cpu0[name] for name, value in self._cpu().items()}
        busy = sum(
            getattr(machine, f) - getattr(self._machine0, f)
            for f in ("user", "nice", "system", "irq", "softirq")
        )
        self.foreign = max(0.0, busy - sum(self.cpu_s.values())) / capacity
        self.steal = (machine.steal - self._machine0.steal) / capacity

    def usage(self) -> dict[str, Any]:
        return {
            "cpu_s": self.cpu_s,
            "peak_rss": self.peak_rss,
            "foreign": self.foreign,
            "steal": self.steal,
        }


def engine_processes(parent: psutil.Process) -> list[psutil.Process]:
    """vLLM's engine core among `parent`'s descendants, with its model-runner children."""
    for child in parent.children(recursive=True):
        if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
            return [child, *child.children(recursive=True)]
    raise RuntimeError(f"no EngineCore process under pid {parent.pid}")


def other_engines(root: psutil.Process) -> list[int]:
    """Engine core processes on this machine that are not descendants of `root`."""
    ours = {p.pid for p in root.children(recursive=True)}
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        text = f"{proc.info['name']} {' '.join(proc.info['cmdline'] or ())}"
        if "EngineCore" in text and proc.info["pid"] not in ours:
            found.append(proc.info["pid"])
    return found


async def run_phases(
    workload: Workload,
    paths: dict[str, Path],
    processes: dict[str, list[psutil.Process]],
    root: psutil.Process,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Warm every path up, then run each (path, concurrency) `rounds` times, interleaved.

    Before each phase, wait while another vLLM engine runs on the machine; a phase during
    which other processes used more than `MAX_FOREIGN` of the machine is run again (at most
    `ATTEMPTS` times in all; the least disturbed attempt is kept and its share reported).
    """
    for name, path in paths.items():
        log(f"warm-up {name}")
        await drive(path, 16, 16, 8)
    results = []
    for concurrency in CONCURRENCIES:
        for round_ in range(workload.rounds):
            for name, path in paths.items():
                attempts = []
                while len(attempts) < ATTEMPTS:
                    await _wait_quiet(root, log)
                    with Monitor(processes) as monitor:
                        traces, wall = await drive(
                            path, workload.requests[concurrency], concurrency, workload.max_tokens
                        )
                    attempts.append(record(traces, wall, workload.max_tokens, monitor.usage()))
                    if monitor.foreign <= MAX_FOREIGN:
                        break
                    log(
                        f"{name} c={concurrency}: other processes used {monitor.foreign:.0%}; again"
                    )
                result = min(attempts, key=lambda r: r["foreign"])
                result.update(workload=workload.name, path=name, concurrency=concurrency)
                result.update(round=round_, attempts=len(attempts))
                results.append(result)
                log(
                    f"{name} c={concurrency} round {round_ + 1}/{workload.rounds}: "
                    f"{result['tokens'] / result['wall_s']:.0f} tok/s"
                )
    return results


async def _wait_quiet(root: psutil.Process, log: Callable[[str], None]) -> None:
    deadline = time.monotonic() + QUIET_WAIT_S
    while (busy := other_engines(root)) and time.monotonic() < deadline:
        log(f"other vLLM engines running ({busy}); waiting")
        await asyncio.sleep(15)
