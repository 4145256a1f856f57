"""The worker assembled from its parts: the serving state on one engine, the job kinds, the
handler. `__main__`, the tests and the benchmark all build it here, the one place that lists
the job kinds."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from vllm_worker import adapters
from vllm_worker.config import Config
from vllm_worker.engine import report_stats
from vllm_worker.handler import Handler, make_handler
from vllm_worker.kinds import JobKind
from vllm_worker.native import NativeKind
from vllm_worker.openai_jobs import OpenAIKind
from vllm_worker.serving import Serving

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM


@dataclasses.dataclass(frozen=True)
class Worker:
    engine: AsyncLLM
    serving: Serving
    handler: Handler
    _background: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)

    async def start(self, stats_interval_s: float) -> None:
        """On the loop that will serve jobs, before the first: set up vLLM's serving layer
        (raises `ServingError` if it cannot be) and log engine stats every interval."""
        await self.serving.state()
        if not self._background:
            task = asyncio.create_task(report_stats(self.engine, stats_interval_s))
            self._background.add(task)


def build(engine: AsyncLLM, config: Config) -> Worker:
    """The worker on `engine`. Without `start`, the first job sets up the serving layer."""
    if config.worker.lora_load_on_demand:
        adapters.register(config)  # before the serving state, which takes the resolvers
    serving = Serving(engine, config.vllm_args)
    kinds: list[JobKind[Any, Any]] = [
        OpenAIKind(serving, config.worker),
        NativeKind(serving, config.worker),  # last: it takes every other input
    ]
    return Worker(engine=engine, serving=serving, handler=make_handler(kinds))
