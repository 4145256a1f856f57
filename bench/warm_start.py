"""`python -m bench.warm_start`: seconds from starting `make run`'s process to the first answer.

Starts `python -m vllm_worker.local` (the default model unless MODEL_NAME is set, everything
already cached), sends one `/runsync` job as soon as a worker takes jobs, and prints where the
time went, from the worker's own log lines. `--env NAME=VALUE` runs it under other settings,
for a before/after in one go::

    flock /tmp/engine.lock python -m bench.warm_start --env DISTRIBUTED_EXECUTOR_BACKEND=mp --env ""
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.endpoint import cold_start
from vllm_worker.local.testing import LocalEndpoint

JOB = {"prompt": "The capital city of France is", "sampling_params": {"max_tokens": 8}}


def measure(env: dict[str, str], log: Path) -> dict[str, float]:
    with LocalEndpoint(log, api_key=None, **env) as endpoint:  # type: ignore[arg-type]
        ready = endpoint.wait_ready(timeout_s=600, poll_s=0.02)
        answer = endpoint.request("POST", "runsync", {"input": JOB}, timeout_s=120).json()
        answered = time.time()
        if answer["status"] != "COMPLETED":
            raise RuntimeError(f"the first job did not complete: {answer}")
        times = cold_start(endpoint, ready)
    times["first answer (after ready)"] = answered - ready
    times["total, until the first answer"] = answered - endpoint.spawned
    return times


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.warm_start", description=__doc__)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        help="NAME=VALUE[,NAME=VALUE]; each --env is one run (an empty one: the defaults)",
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="vllm-worker-warm-"))
    for index, spec in enumerate(args.env or [""]):
        env = dict(pair.split("=", 1) for pair in spec.split(",") if pair)
        times = measure(env, folder / f"run-{index}.log")
        print(f"{spec or 'defaults'} (log: {folder / f'run-{index}.log'})")
        for name, seconds in times.items():
            print(f"  {name:52} {seconds:6.1f} s")


if __name__ == "__main__":
    main()
