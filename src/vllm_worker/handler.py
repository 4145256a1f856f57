"""The RunPod handler: pick the job's kind, yield what it yields, report failures as job errors.

A yielded `{"error": "..."}` ends the job as FAILED with that message (the SDK's contract), so
bad input never raises out of the handler and never disturbs other jobs. The handler logs one
line per job from the kind's `JobStats`; it knows nothing of any kind's input or output format.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Any

from vllm_worker.errors import JobError
from vllm_worker.kinds import ErrorItem, JobKind, JobStats

logger = logging.getLogger(__name__)

#: A RunPod job (`{"id": ..., "input": ...}`) -> its output items.
Handler = Callable[[dict[str, Any]], AsyncGenerator[object]]

#: The error a running job fails with when vLLM's engine dies.
ENGINE_DEAD = "the vLLM engine died; this worker is shutting down"


def make_handler(kinds: Sequence[JobKind[Any, Any]]) -> Handler:
    """The async-generator handler for `runpod.serverless.start`.

    A job goes to the first kind whose `route` accepts its input, so a catch-all kind comes
    last.
    """
    from vllm.v1.engine.exceptions import EngineDeadError

    async def handler(job: dict[str, Any]) -> AsyncGenerator[object]:
        job_id = str(job.get("id", "local"))
        job_input = job.get("input")
        claimed = ((kind, route) for kind in kinds if (route := kind.route(job_input)) is not None)
        kind, route = next(claimed, (None, "unclaimed"))
        stats = JobStats(route=route)
        started = time.perf_counter()
        outcome = "failed"
        try:
            if kind is None:
                raise JobError("no job kind of this worker takes this input")
            request = await kind.parse(job_input)
            async with aclosing(kind.run(request, job_id, stats)) as items:
                async for item in items:
                    if stats.first_item_s is None:
                        stats.first_item_s = time.perf_counter() - started
                    yield item
            outcome = "completed"
        except JobError as error:
            yield ErrorItem(error=str(error))
        except EngineDeadError:
            yield ErrorItem(error=ENGINE_DEAD)
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            _log_job(job_id, outcome, time.perf_counter() - started, stats)

    return handler


def _log_job(job_id: str, outcome: str, elapsed_s: float, stats: JobStats) -> None:
    """One line per job, with counts and timings only: never prompt or output text."""
    ttft = f"{stats.first_item_s * 1000:.0f}ms" if stats.first_item_s is not None else "-"
    output = stats.output_tokens
    rate = f"{output / elapsed_s:.1f}" if output is not None and elapsed_s > 0 else "-"
    logger.info(
        "job %s %s in %.2fs: route=%s prompt_tokens=%s output_tokens=%s ttft=%s "
        "tokens_per_s=%s finish=%s",
        job_id,
        outcome,
        elapsed_s,
        "".join(ch for ch in stats.route[:64] if ch.isprintable()),
        stats.prompt_tokens if stats.prompt_tokens is not None else "-",
        output if output is not None else "-",
        ttft,
        rate,
        ",".join(str(f) for f in stats.finish_reasons) or "-",
    )
