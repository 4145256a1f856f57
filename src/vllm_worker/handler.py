"""The RunPod handler: validate a job, run it on the engine, report failures as job errors.

A yielded `{"error": "..."}` ends the job as FAILED with that message (the SDK's contract),
so bad input never raises out of the handler and never disturbs other jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

from vllm_worker import native
from vllm_worker.config import Config
from vllm_worker.errors import JobInputError
from vllm_worker.jobs import parse_native

logger = logging.getLogger(__name__)

Handler = Callable[[dict], AsyncIterator[dict]]


def make_handler(engine, config: Config) -> Handler:
    """The async-generator handler for `runpod.serverless.start`, bound to one engine."""
    from vllm.v1.engine.exceptions import EngineDeadError

    tokenizer = engine.get_tokenizer()

    async def handler(job: dict) -> AsyncIterator[dict]:
        job_id = str(job.get("id", "local"))
        started = time.perf_counter()
        outcome, last = "failed", None
        try:
            request = native.build_request(parse_native(job.get("input")), tokenizer, config.worker)
            request_id = f"{job_id}-{uuid.uuid4().hex[:8]}"
            async for item in native.generate(engine, request, request_id):
                last = item
                yield item
            outcome = "completed"
        except JobInputError as error:
            yield {"error": str(error)}
        except EngineDeadError:
            yield {"error": "the vLLM engine died; this worker is shutting down"}
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            _log_job(job_id, outcome, last, time.perf_counter() - started)

    return handler


def _log_job(job_id: str, outcome: str, last: dict | None, seconds: float) -> None:
    """One line per job, with counts and timings only: never prompt or output text."""
    usage = (last or {}).get("usage", {})
    finish = [c.get("finish_reason") for c in (last or {}).get("choices", [])]
    logger.info(
        "job %s %s in %.2fs: prompt_tokens=%s output_tokens=%s finish=%s",
        job_id,
        outcome,
        seconds,
        usage.get("input"),
        usage.get("output"),
        ",".join(str(f) for f in finish) or "-",
    )
