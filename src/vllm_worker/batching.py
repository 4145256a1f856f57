"""The growing batch policy: how many tokens each streamed yield carries, and when it leaves.

Small first batches give a fast first token; growing ones keep the number of HTTP posts per
job low. Nothing here knows about vLLM or RunPod.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

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


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def paced(
    source: AsyncIterator[T], timeout: Callable[[], float | None]
) -> AsyncIterator[T | object]:
    """The items of `source`, plus `TICK` whenever `timeout()` seconds pass without one.

    The source is read by a task of its own, so waiting with a timeout never cancels it;
    closing this generator cancels that task (and so closes the source).
    """
    queue: asyncio.Queue = asyncio.Queue()

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
