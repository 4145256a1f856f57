"""The growing batch policy: how many tokens each streamed yield carries, and when it leaves.

Small first batches give a fast first token; growing ones keep the number of HTTP posts per
job low. Every job kind takes its policy from here (`policy_for`). Nothing here knows about
vLLM or RunPod.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from vllm_worker.config import WorkerSettings

T = TypeVar("T")

#: Yielded by `paced` when the caller's deadline passed with no new item.
TICK = object()
_END = object()


class BatchPolicy(BaseModel):
    """First batch `min_size`, each next one `growth` times larger, never above `max_size`.

    With `max_wait_s`, a batch also leaves once its first item has waited that long.
    """

    model_config = ConfigDict(frozen=True, strict=True)

    min_size: int = Field(ge=1)
    max_size: int = Field(ge=1)
    growth: float = Field(ge=1)
    max_wait_s: float | None = Field(None, gt=0)

    def sizes(self) -> Iterator[int]:
        """Endless batch sizes: 1, 3, 9, 27, 50, 50, ... for (1, 50, 3)."""
        size = float(min(self.min_size, self.max_size))
        while True:
            yield math.ceil(size)
            size = min(size * self.growth, self.max_size)


class BatchFields(Protocol):
    """The optional batch fields a job may carry beside its request (RunPod's worker names)."""

    @property
    def min_batch_size(self) -> int | None: ...
    @property
    def max_batch_size(self) -> int | None: ...
    @property
    def batch_size_growth_factor(self) -> float | None: ...


def policy_for(job: BatchFields, settings: WorkerSettings) -> BatchPolicy:
    """A job's batch policy: its own values over the environment's defaults."""
    return BatchPolicy(
        min_size=job.min_batch_size or settings.default_min_batch_size,
        max_size=job.max_batch_size or settings.default_batch_size,
        growth=job.batch_size_growth_factor or settings.default_batch_size_growth_factor,
        max_wait_s=settings.max_batch_wait_ms / 1000 or None,
    )


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def paced(
    source: AsyncIterator[T], timeout: Callable[[], float | None]
) -> AsyncGenerator[T | object]:
    """The items of `source`, plus `TICK` whenever `timeout()` seconds pass without one.

    The source is read by a task of its own, so waiting with a timeout never cancels it;
    closing this generator cancels that task (and so closes the source).
    """
    queue: asyncio.Queue[T | _Failed | object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in source:
                queue.put_nowait(item)
        except Exception as error:
            queue.put_nowait(_Failed(error))
        queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout())
            except TimeoutError:
                yield TICK
                continue
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
