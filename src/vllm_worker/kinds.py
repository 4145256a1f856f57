"""The interface every kind of job implements (native, OpenAI, ...), and what they report.

A kind recognises its jobs by their input, turns that input into a typed request, and runs the
request, yielding the job's output items and filling a `JobStats` as it goes. The handler
knows nothing else about a kind: not its input fields, not its output format. A new kind is a
class with these three methods, added to the list `worker.build` hands the handler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import Protocol, TypedDict, TypeVar

RequestT = TypeVar("RequestT")
ItemT_co = TypeVar("ItemT_co", covariant=True)


@dataclasses.dataclass
class JobStats:
    """Counts one job reports in its log line; a kind fills what it knows, None stays unknown."""

    route: str  # "native", or the OpenAI route
    prompt_tokens: int | None = None
    output_tokens: int | None = None  # over all sequences
    finish_reasons: list[str | None] = dataclasses.field(default_factory=list)  # per sequence
    first_item_s: float | None = None  # seconds from the job's start to its first item


class ErrorItem(TypedDict):
    """The item that ends a job as FAILED with `error` as its message (the runpod SDK's rule:
    a yielded dict with a truthy `error`)."""

    error: str


class JobKind(Protocol[RequestT, ItemT_co]):
    """One kind of job: how its input is recognised, validated and run."""

    def route(self, job_input: object) -> str | None:
        """The route this kind serves `job_input` as (for logs), or None if it is not its job."""
        ...

    async def parse(self, job_input: object) -> RequestT:
        """The typed request; raises `errors.JobError` naming what is wrong with the input."""
        ...

    def run(self, request: RequestT, job_id: str, stats: JobStats) -> AsyncGenerator[ItemT_co]:
        """Run the request, yielding output items. Closing the iterator aborts the request;
        a failure the user can act on raises `errors.JobError`."""
        ...
