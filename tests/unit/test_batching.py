import asyncio
from itertools import islice

import pytest
from pydantic import ValidationError

from vllm_worker.batching import TICK, BatchPolicy, paced


def first(policy: BatchPolicy, count: int) -> list[int]:
    return list(islice(policy.sizes(), count))


def test_default_policy_grows_by_three_up_to_fifty():
    assert first(BatchPolicy(min_size=1, max_size=50, growth=3), 7) == [1, 3, 9, 27, 50, 50, 50]


def test_fractional_growth_rounds_sizes_up():
    assert first(BatchPolicy(min_size=1, max_size=10, growth=1.5), 7) == [1, 2, 3, 4, 6, 8, 10]


def test_growth_one_keeps_size_constant():
    assert first(BatchPolicy(min_size=4, max_size=50, growth=1), 3) == [4, 4, 4]


def test_min_above_max_is_capped():
    assert first(BatchPolicy(min_size=80, max_size=50, growth=3), 2) == [50, 50]


@pytest.mark.parametrize(
    "fields", [{"min_size": 0}, {"max_size": 0}, {"growth": 0.5}, {"min_size": "2"}]
)
def test_invalid_policy_is_rejected(fields):
    with pytest.raises(ValidationError):
        BatchPolicy.model_validate({"min_size": 1, "max_size": 50, "growth": 3, **fields})


async def _slow_source(gaps: list[float], log: list[str]):
    try:
        for i, gap in enumerate(gaps):
            await asyncio.sleep(gap)
            yield i
    finally:
        log.append("closed")


async def test_paced_ticks_when_the_deadline_passes_without_an_item():
    log: list[str] = []
    deadline = [0.05]
    seen = [x async for x in paced(_slow_source([0.0, 0.2, 0.0], log), lambda: deadline[0])]
    assert seen[0] == 0 and seen[-1] == 2
    assert TICK in seen[1 : seen.index(1)]
    assert log == ["closed"]


async def test_paced_without_deadline_only_relays_items():
    log: list[str] = []
    seen = [x async for x in paced(_slow_source([0.01, 0.01], log), lambda: None)]
    assert seen == [0, 1]


async def test_closing_paced_closes_the_source():
    log: list[str] = []
    stream = paced(_slow_source([0.0, 10.0], log), lambda: None)
    assert await anext(stream) == 0
    await stream.aclose()
    assert log == ["closed"]


async def test_paced_passes_source_errors_on():
    async def failing():
        yield 1
        raise ValueError("boom")

    stream = paced(failing(), lambda: None)
    assert await anext(stream) == 1
    with pytest.raises(ValueError, match="boom"):
        await anext(stream)
