"""The growing batch policy: how many tokens each streamed yield carries.

Small first batches give a fast first token; growing ones keep the number of HTTP posts per
job low. Nothing here knows about vLLM or RunPod.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from pydantic import BaseModel, ConfigDict, Field


class BatchPolicy(BaseModel):
    """First batch `min_size`, each next one `growth` times larger, never above `max_size`."""

    model_config = ConfigDict(frozen=True, strict=True)

    min_size: int = Field(ge=1)
    max_size: int = Field(ge=1)
    growth: float = Field(ge=1)

    def sizes(self) -> Iterator[int]:
        """Endless batch sizes: 1, 3, 9, 27, 50, 50, ... for (1, 50, 3)."""
        size = float(min(self.min_size, self.max_size))
        while True:
            yield math.ceil(size)
            size = min(size * self.growth, self.max_size)
