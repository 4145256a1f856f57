"""A worker that could not start, telling every job why: each fails at once with the reason.

On RunPod a worker process that exits at start-up is started again, and again: the user pays
for every boot while the jobs wait `IN_QUEUE`, and the reason is in a log few people find. A
failure a setting causes will not pass by itself, so after one `startup_failure` recognises,
the worker still runs the SDK's job loop, failing every job with that sentence for as long as
it runs: the queue drains and the platform sees an idle worker instead of a crash loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path
from typing import Any

from vllm_worker.config import ConfigError, WorkerSettings
from vllm_worker.handler import Handler
from vllm_worker.kinds import ErrorItem
from vllm_worker.startup_failure import StartUpFailure

logger = logging.getLogger(__name__)

#: Set by the local endpoint: the file the sentence is written to, for its `/health`.
FAILURE_FILE_VAR = "WORKER_START_UP_FAILURE_FILE"


def handler(failure: StartUpFailure) -> Handler:
    """The job handler of a worker that failed to start: every job fails with the sentence."""
    item = ErrorItem(error=failure.message)

    async def fail(job: dict[str, Any]) -> AsyncGenerator[ErrorItem]:
        yield item

    return fail


def report(failure: StartUpFailure, environ: Mapping[str, str] = os.environ) -> None:
    """Log the sentence once, at error level, and hand it to the local endpoint if one runs
    this worker."""
    logger.error("the worker cannot start: %s", failure.message)
    if path := environ.get(FAILURE_FILE_VAR):
        try:  # whole or not at all: the endpoint may read it at any moment
            partial = Path(f"{path}.partial")
            partial.write_text(failure.message)
            partial.replace(path)
        except OSError as error:
            logger.warning("could not write %s: %s", path, error)


def settings(environ: Mapping[str, str] = os.environ) -> WorkerSettings:
    """The worker settings, or their defaults when they are what failed."""
    try:
        return WorkerSettings.from_env(environ)
    except ConfigError:
        return WorkerSettings.from_env({})


def serve(failure: StartUpFailure, environ: Mapping[str, str] = os.environ) -> None:
    """Report `failure` and run the SDK's job loop with the failing handler until stopped."""
    report(failure, environ)
    worker = settings(environ)
    os.environ["RUNPOD_LOG_LEVEL"] = worker.runpod_log_level
    import runpod

    from vllm_worker import scaler

    scaler.install(grace_s=worker.shutdown_grace_period)
    concurrency = worker.max_concurrency
    runpod.serverless.start(
        {
            "handler": handler(failure),
            "concurrency_modifier": lambda _current: concurrency,
            "return_aggregate_stream": True,
        }
    )
