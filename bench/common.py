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
    sampled every 50 ms, so a peak shorter than that may be missed.
    """

    def __init__(self, groups: dict[str, list[psutil.Process]], interval_s: float = 0.05) -> None:
        self._groups = groups
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cpu0: dict[str, float] = {}
        self.peak_rss = dict.fromkeys(groups, 0)
        self.cpu_s: dict[str, float] = {}

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
        self._cpu0 = self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = {name: value - self._cpu0[name] for name, value in self._cpu().items()}

    def usage(self) -> dict[str, dict]:
        return {"cpu_s": self.cpu_s, "peak_rss": self.peak_rss}


def engine_processes(parent: psutil.Process) -> list[psutil.Process]:
    """vLLM's engine core among `parent`'s descendants, with its model-runner children."""
    for child in parent.children(recursive=True):
        if "EngineCore" in child.name() or "EngineCore" in " ".join(child.cmdline()):
            return [child, *child.children(recursive=True)]
    raise RuntimeError(f"no EngineCore process under pid {parent.pid}")


async def run_phases(
    workload: Workload,
    paths: dict[str, Path],
    processes: dict[str, list[psutil.Process]],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Warm every path up, then run each (path, concurrency) `rounds` times, interleaved."""
    for name, path in paths.items():
        log(f"warm-up {name}")
        await drive(path, 16, 16, 8)
    results = []
    for concurrency in CONCURRENCIES:
        for round_ in range(workload.rounds):
            for name, path in paths.items():
                requests = workload.requests[concurrency]
                with Monitor(processes) as monitor:
                    traces, wall = await drive(path, requests, concurrency, workload.max_tokens)
                result = record(traces, wall, workload.max_tokens, monitor.usage())
                result.update(workload=workload.name, path=name, concurrency=concurrency)
                result["round"] = round_
                results.append(result)
                log(
                    f"{name} c={concurrency} round {round_ + 1}/{workload.rounds}: "
                    f"{result['tokens'] / wall:.0f} tok/s"
                )
    return results
