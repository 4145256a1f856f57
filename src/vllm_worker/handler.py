"""The RunPod handler: validate a job, run it on the engine, report failures as job errors.

A job whose input has `openai_route` goes to vLLM's OpenAI app (`openai_jobs`); any other is
a native job. A yielded `{"error": "..."}` ends the job as FAILED with that message (the SDK's
contract), so bad input never raises out of the handler and never disturbs other jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from vllm_worker import native
from vllm_worker.config import Config
from vllm_worker.errors import JobInputError
from vllm_worker.jobs import parse_native
from vllm_worker.openai_jobs import OpenAIError, OpenAIServer

logger = logging.getLogger(__name__)

Handler = Callable[[dict], AsyncIterator[dict]]


def make_handler(engine, config: Config) -> Handler:
    """The async-generator handler for `runpod.serverless.start`, bound to one engine."""
    from vllm.v1.engine.exceptions import EngineDeadError

    tokenizer = engine.get_tokenizer()
    openai = OpenAIServer(engine, config)

    async def handler(job: dict) -> AsyncIterator[dict]:
        job_id = str(job.get("id", "local"))
        job_input = job.get("input")
        is_openai = isinstance(job_input, dict) and "openai_route" in job_input
        started = time.perf_counter()
        outcome, last, count = "failed", None, 0
        try:
            if is_openai:
                items = openai.run(job_input)
            else:
                request = native.build_request(parse_native(job_input), tokenizer, config.worker)
                items = native.generate(engine, request, f"{job_id}-{uuid.uuid4().hex[:8]}")
            async with aclosing(items):
                async for item in items:
                    last, count = item, count + 1
                    yield item
            outcome = "completed"
        except (JobInputError, OpenAIError) as error:
            yield {"error": str(error)}
        except EngineDeadError:
            yield {"error": "the vLLM engine died; this worker is shutting down"}
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        finally:
            # One line per job, with counts and timings only: never prompt or output text.
            detail = (
                f"openai_route={job_input['openai_route']} items={count}"
                if is_openai
                else _counts(last)
            )
            logger.info(
                "job %s %s in %.2fs: %s", job_id, outcome, time.perf_counter() - started, detail
            )

    return handler


def _counts(last: dict | None) -> str:
    """Token counts and finish reasons of a native job, from its last item."""
    usage = (last or {}).get("usage", {})
    finish = [str(c.get("finish_reason")) for c in (last or {}).get("choices", [])]
    return (
        f"prompt_tokens={usage.get('input')} output_tokens={usage.get('output')} "
        f"finish={','.join(finish) or '-'}"
    )
