"""The batch promise on the real engine, for both job kinds: streamed content equals the
non-streamed content, and each item holds at least its batch size, idle or under load."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.test_openai_jobs import batch_sizes, chunks
from tests.helpers import keeps_batch_promise, run_job, text_of
from vllm_worker.batching import BatchPolicy
from vllm_worker.default_model import HUB_ID

PROMPTS = ["The capital city of France is", "Once upon a time", "def fibonacci(n):", "1, 2, 3,"]


def native_job(prompt: str, max_tokens: int, stream: bool, policy: BatchPolicy) -> dict:
    return {
        "prompt": prompt,
        "stream": stream,
        "min_batch_size": policy.min_size,
        "max_batch_size": policy.max_size,
        "batch_size_growth_factor": policy.growth,
        "sampling_params": {"max_tokens": max_tokens, "temperature": 0, "logprobs": 0},
    }


def openai_job(prompt: str, max_tokens: int, stream: bool, policy: BatchPolicy) -> dict:
    body = {
        "model": HUB_ID,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": 0,
        "stream": stream,
    }
    return {
        "openai_route": "/v1/completions",
        "openai_input": body,
        "min_batch_size": policy.min_size,
        "max_batch_size": policy.max_size,
        "batch_size_growth_factor": policy.growth,
    }


async def native_run(handler, prompt, max_tokens, stream, policy) -> tuple[str, list[int]]:
    """The text and the tokens per item of one native job."""
    items = await run_job(handler, native_job(prompt, max_tokens, stream, policy))
    sizes = [len(item["choices"][0]["logprobs"]) for item in items]
    return text_of(items), sizes


async def openai_run(handler, prompt, max_tokens, stream, policy) -> tuple[str, list[int]]:
    """The text and the tokens per SSE event (or of the response) of one OpenAI job."""
    items = await run_job(handler, openai_job(prompt, max_tokens, stream, policy))
    if not stream:
        choice = items[0]["choices"][0]
        return choice["text"], [len(choice["logprobs"]["tokens"])]
    parsed = chunks(items)
    return "".join(c["choices"][0]["text"] for c in parsed), batch_sizes(parsed)


policies = st.builds(
    BatchPolicy,
    min_size=st.integers(1, 4),
    max_size=st.integers(1, 16),
    growth=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prompt=st.sampled_from(PROMPTS),
    max_tokens=st.integers(1, 40),
    policy=policies,
    run=st.sampled_from([native_run, openai_run]),
)
async def test_streamed_content_equals_whole_content_in_promised_batches(
    handler, prompt, max_tokens, policy, run
):
    whole, (total,) = await run(handler, prompt, max_tokens, False, policy)
    streamed, sizes = await run(handler, prompt, max_tokens, True, policy)
    assert streamed == whole
    assert sum(sizes) == total
    assert keeps_batch_promise(sizes, policy), sizes


async def test_the_promise_holds_under_load(handler):
    """16 streams at once: the engine merges outputs for readers that fall behind, and the
    batches still hold at least their sizes."""
    policy = BatchPolicy(min_size=1, max_size=50, growth=3)
    runs = [
        run(handler, PROMPTS[i % len(PROMPTS)], 80, True, policy)
        for i in range(8)
        for run in (native_run, openai_run)
    ]
    results = await asyncio.gather(*runs)
    for _, sizes in results:
        assert sum(sizes) == 80
        assert keeps_batch_promise(sizes, policy), sizes
