"""`python -m bench.hops`: where a streamed item waits between the handler's yield and the client.

Starts the local endpoint on the tiny model with `WORKER_TRACE` set (see
`vllm_worker.trace`), drives `/run` + `/stream` jobs and OpenAI streaming chat calls at
concurrency 1 and 16, marks each item's arrival at the client on the same clock, and prints,
per path and concurrency, how long items spent between consecutive hops (p50 / p90 / max, in
ms), for the first item of each job and for all items::

    flock /tmp/engine.lock python -m bench.hops [--jobs 8] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import MESSAGES, native_input, sampling_params
from bench.tiny_model import ensure_tiny_model

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
#: The hops of an item, in order; a hop a path does not pass is skipped.
HOPS = ["yield", "post", "post_sent", "recv", "recv_body", "sent", "client"]


async def native_job(
    client: aiohttp.ClientSession, url: str, model: str, tokens: int, marks: list
) -> None:
    async with client.post(f"{url}/run", json={"input": native_input(True, tokens)}) as answer:
        job = (await answer.json())["id"]
    received = 0
    while True:
        async with client.post(f"{url}/stream/{job}") as answer:
            body = await answer.json()
        now = time.monotonic()
        for _ in body["stream"]:
            marks.append({"t": now, "hop": "client", "job": job, "n": received})
            received += 1
        if body["status"] in FINAL:
            return


async def openai_call(
    client: aiohttp.ClientSession, url: str, model: str, tokens: int, marks: list
) -> None:
    body = {"model": model, "messages": MESSAGES, "stream": True, **sampling_params(tokens)}
    seen: list[tuple[float, int]] = []
    crc = end = 0
    async with client.post(f"{url}/openai/v1/chat/completions", json=body) as answer:
        async for data in answer.content.iter_any():
            crc, end = zlib.crc32(data, crc), end + len(data)
            seen.append((time.monotonic(), end))
    marks.append({"hop": "client_sse", "crc": crc, "seen": seen})


async def drive(url: str, kind: str, jobs: int, concurrency: int, tokens: int) -> list[dict]:
    marks: list[dict] = []
    queue = iter(range(jobs))
    call = native_job if kind == "stream" else openai_call
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(300)) as client:
        async with client.get(f"{url}/openai/v1/models") as answer:  # the OpenAI route checks it
            model = (await answer.json())["data"][0]["id"]

        async def one() -> None:
            for _ in queue:
                await call(client, url, model, tokens, marks)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return marks


def item_times(marks: list[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """(job, item index) -> {hop: time}, from the marks of every process."""
    items: dict[tuple[str, int], dict[str, float]] = collections.defaultdict(dict)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    by_crc: dict[int, tuple[str, int, int]] = {}  # running CRC -> job, item, end offset
    ends: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)  # job -> (end, n)
    for mark in marks:
        hop, job = mark["hop"], mark.get("job", "")
        if hop == "yield":
            items[job, mark["n"]]["yield"] = mark["t"]
            if "crc" in mark:
                by_crc[mark["crc"]] = (job, mark["n"], mark["end"])
                ends[job].append((mark["end"], mark["n"]))
        elif hop in ("post", "post_sent", "recv", "recv_body") and mark["kind"] == "job-stream":
            n = counts[job, hop]
            counts[job, hop] += 1
            items[job, n][hop] = mark["t"]
        elif hop == "stream_sent":
            first = counts[job, hop]
            counts[job, hop] += mark["items"]
            for n in range(first, first + mark["items"]):
                items[job, n]["sent"] = mark["t"]
        elif hop == "sse_sent" and mark["crc"] in by_crc:
            job, n, _ = by_crc[mark["crc"]]
            items[job, n]["sent"] = mark["t"]
        elif hop == "client" and "n" in mark:
            items[job, mark["n"]]["client"] = mark["t"]
    for mark in marks:
        if mark["hop"] == "client_sse" and mark["crc"] in by_crc:
            job = by_crc[mark["crc"]][0]
            for end, n in ends[job]:
                arrived = next(t for t, got in mark["seen"] if got >= end)
                items[job, n]["client"] = arrived
    return items


def summary(items: dict[tuple[str, int], dict[str, float]], first_only: bool) -> list[str]:
    rows = []
    gaps: dict[str, list[float]] = collections.defaultdict(list)
    for (_, n), hops in items.items():
        if first_only and n:
            continue
        present = [h for h in HOPS if h in hops]
        for a, b in itertools.pairwise(present):
            gaps[f"{a} -> {b}"].append((hops[b] - hops[a]) * 1000)
        if "yield" in hops and "client" in hops:
            gaps["yield -> client (total)"].append((hops["client"] - hops["yield"]) * 1000)
    for name, values in gaps.items():
        values.sort()
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        rows.append(
            f"    {name:28} p50 {statistics.median(values):7.1f}  p90 {p90:7.1f}  "
            f"max {values[-1]:7.1f}  (n={len(values)})"
        )
    return rows


def main() -> None:
    from vllm_worker import trace
    from vllm_worker.local.testing import LocalEndpoint

    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__)
    parser.add_argument("--jobs", type=int, default=8, help="jobs per path at concurrency 1")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--model", help="MODEL_NAME (default: the tiny model)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vllm-worker-hops-"))
    model = args.model or str(ensure_tiny_model())
    print(f"trace in {folder}", file=sys.stderr)
    env: dict[str, Any] = {"MODEL_NAME": model, "WORKER_TRACE": str(folder / "trace")}
    with LocalEndpoint(folder / "endpoint.log", api_key=None, **env) as endpoint:
        endpoint.wait_ready(timeout_s=600)
        asyncio.run(drive(endpoint.url, "stream", 4, 4, 8))  # warm-up
        runs = {}
        for concurrency, jobs in ((1, args.jobs), (16, 2 * 16)):
            for kind in ("stream", "openai"):
                start = time.monotonic()
                client = asyncio.run(drive(endpoint.url, kind, jobs, concurrency, args.tokens))
                runs[kind, concurrency] = (start, time.monotonic(), client)
    marks = trace.read(folder / "trace")
    for (kind, concurrency), (start, stop, client) in runs.items():
        window = [m for m in marks if start <= m["t"] <= stop] + client
        items = item_times(window)
        print(f"{kind} c={concurrency}: {len({job for job, _ in items})} jobs")
        for label, first in (("first item", True), ("every item", False)):
            print(f"  {label} (ms between hops)")
            print("\n".join(summary(items, first)))
    (folder / "client.json").write_text(json.dumps({str(k): v[2] for k, v in runs.items()}))
    os.environ.pop("WORKER_TRACE", None)


if __name__ == "__main__":
    main()
