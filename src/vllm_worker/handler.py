"""The RunPod handler: validate a job, run it on the engine, report failures as job errors.

A job whose input has `openai_route` goes to vLLM's OpenAI app (`openai_jobs`); any other is
a native job. A yielded `{"error": "..."}` ends the job as FAILED with that message (the SDK's
contract), so bad input never raises out of the handler and never disturbs other jobs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from vllm_worker import native
from vllm_worker.config import Config
from vllm_worker.engine import report_stats
from vllm_worker.errors import JobInputError
from vllm_worker.jobs import parse_native
from vllm_worker.openai_jobs import OpenAIError, OpenAIServer

logger = logging.getLogger(__name__)

Handler = Callable[[dict], AsyncIterator[dict]]


def make_handler(engine, config: Config) -> Handler:
    """The async-generator handler for `runpod.serverless.start`, bound to one engine."""
    from vllm import envs
    from vllm.v1.engine.exceptions import EngineDeadError

    tokenizer = engine.get_tokenizer()
    openai = OpenAIServer(engine, config)
    background: set[asyncio.Task] = set()

    async def handler(job: dict) -> AsyncIterator[dict]:
        if not background:  # the SDK's event loop exists only once jobs arrive
            background.add(asyncio.create_task(report_stats(engine, envs.VLLM_LOG_STATS_INTERVAL)))
        job_id = str(job.get("id", "local"))
        job_input = job.get("input")
        is_openai = isinstance(job_input, dict) and "openai_route" in job_input
        started = time.perf_counter()
        outcome, last, first_at = "failed", None, None
        try:
            if is_openai:
                items = openai.run(job_input)
            else:
                request = native.build_request(parse_native(job_input), tokenizer, config.worker)
                items = native.generate(engine, request, f"{job_id}-{uuid.uuid4().hex[:8]}")
            async with aclosing(items):
                async for item in items:
                    if first_at is None:
                        first_at = time.perf_counter()
                    last = item
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
            route = str(job_input["openai_route"]) if is_openai else "native"
            _log_job(job_id, route, outcome, started, first_at, last)

    return handler


def _log_job(
    job_id: str, route: str, outcome: str, started: float, first_at: float | None, last
) -> None:
    """One line per job, with counts and timings only: never prompt or output text."""
    elapsed = time.perf_counter() - started
    prompt, output, finish = _native_counts(last) if route == "native" else _openai_counts(last)
    ttft = f"{(first_at - started) * 1000:.0f}ms" if first_at is not None else "-"
    rate = f"{output / elapsed:.1f}" if isinstance(output, int) and elapsed > 0 else "-"
    logger.info(
        "job %s %s in %.2fs: route=%s prompt_tokens=%s output_tokens=%s ttft=%s "
        "tokens_per_s=%s finish=%s",
        job_id,
        outcome,
        elapsed,
        "".join(ch for ch in route[:64] if ch.isprintable()),
        prompt if prompt is not None else "-",
        output if output is not None else "-",
        ttft,
        rate,
        ",".join(str(f) for f in finish) or "-",
    )


def _native_counts(last: dict | None) -> tuple[int | None, int | None, list]:
    """Token counts and finish reasons of a native job, from its last item."""
    usage = (last or {}).get("usage", {})
    finish = [c.get("finish_reason") for c in (last or {}).get("choices", [])]
    return usage.get("input"), usage.get("output"), finish


def _openai_counts(last) -> tuple[int | None, int | None, list]:
    """Token counts and finish reasons of an OpenAI job: from its response, or from the last
    events of its stream (only parsed once, at the end; a stream has usage when asked for)."""
    if isinstance(last, str):
        events = [e[6:] for e in last.split("\n\n") if e.startswith("data: {")]
        last = json.loads(events[-1]) if events else None
    elif isinstance(last, list):
        last = last[-1] if last else None
    if not isinstance(last, dict):
        return None, None, []
    usage = last.get("usage") or {}
    finish = [c.get("finish_reason") for c in last.get("choices") or [] if isinstance(c, dict)]
    return usage.get("prompt_tokens"), usage.get("completion_tokens"), finish
