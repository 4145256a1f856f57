"""The one batcher, on synthetic vLLM delta outputs: what a batch holds, whatever the engine
delivers at once."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vllm_worker.batching import BatchPolicy
from vllm_worker.coalesce import BatchingEngineClient, coalesce, new_tokens, stream_policy


def delta(index: int, tokens: list[int], finished: bool = False, n: int = 1):
    """One delta output as vLLM's engine gives it: `tokens` new ids per sequence."""
    from vllm import CompletionOutput, RequestOutput

    outputs = [
        CompletionOutput(
            index=i,
            text="".join(f"<{t}>" for t in tokens),
            token_ids=list(tokens),
            cumulative_logprob=None,
            logprobs=None,
            finish_reason="length" if finished else None,
        )
        for i in range(n)
    ]
    return RequestOutput(
        request_id=f"r{index}",
        prompt="p",
        prompt_token_ids=[1, 2],
        prompt_logprobs=None,
        outputs=outputs,
        finished=finished,
    )


async def _source(outputs, pauses=None):
    for i, output in enumerate(outputs):
        if pauses:
            await asyncio.sleep(pauses[i])
        yield output


def _outputs(sizes: list[int], n: int = 1):
    token = iter(range(10**6))
    return [
        delta(i, [next(token) for _ in range(size)], finished=i == len(sizes) - 1, n=n)
        for i, size in enumerate(sizes)
    ]


policies = st.builds(
    BatchPolicy,
    min_size=st.integers(1, 5),
    max_size=st.integers(1, 20),
    growth=st.sampled_from([1.0, 1.5, 2.0, 3.0]),
)


@settings(max_examples=200, deadline=None)
@given(policy=policies, sizes=st.lists(st.integers(1, 6), min_size=1, max_size=40))
async def test_batches_reach_their_size_and_exceed_it_only_by_one_delivery(policy, sizes):
    outputs = _outputs(sizes)
    expected_text = "".join(o.outputs[0].text for o in outputs)
    batches = [b async for b in coalesce(_source(outputs), policy)]
    # Every token arrives once, in order.
    assert "".join(b.outputs[0].text for b in batches) == expected_text
    assert sum(new_tokens(b) for b in batches) == sum(sizes)
    assert [b.finished for b in batches] == [False] * (len(batches) - 1) + [True]
    # Each batch but the last holds at least its size, and more only by what the delivery
    # that completed it carried beyond that (never a whole delivery too many).
    deliveries = iter(sizes)
    for batch, target in zip(batches[:-1], policy.sizes(), strict=False):
        held = new_tokens(batch)
        assert held >= target
        carried = []
        while sum(carried) < held:
            carried.append(next(deliveries))
        assert sum(carried) == held  # batches end on delivery boundaries
        assert held - carried[-1] < target


async def test_single_token_deliveries_give_exactly_the_policy_sizes():
    policy = BatchPolicy(min_size=1, max_size=50, growth=3)
    batches = [b async for b in coalesce(_source(_outputs([1] * 100)), policy)]
    assert [new_tokens(b) for b in batches] == [1, 3, 9, 27, 50, 10]


async def test_n_sequences_count_on_the_longest():
    batches = [
        b
        async for b in coalesce(
            _source(_outputs([1] * 4, n=2)), BatchPolicy(min_size=2, max_size=2, growth=1)
        )
    ]
    assert [[len(s.token_ids) for s in b.outputs] for b in batches] == [[2, 2], [2, 2]]


async def test_max_wait_sends_a_partial_batch():
    policy = BatchPolicy(min_size=10, max_size=10, growth=1, max_wait_s=0.05)
    outputs = _outputs([1, 1, 1])
    batches = [b async for b in coalesce(_source(outputs, [0, 0, 0.3]), policy)]
    assert [new_tokens(b) for b in batches] == [2, 1]


async def test_closing_the_batches_closes_the_engine_stream():
    closed = asyncio.Event()

    async def endless():
        try:
            i = 0
            while True:
                i += 1
                yield delta(i, [i])
        finally:
            closed.set()

    batches = coalesce(endless(), BatchPolicy(min_size=2, max_size=2, growth=1))
    assert new_tokens(await anext(batches)) == 2
    await batches.aclose()
    assert closed.is_set()


class _Engine:
    def __init__(self, outputs):
        self.outputs = outputs
        self.model_config = "the engine's"

    def generate(self, prompt, sampling_params, request_id, **kwargs):
        return _source(self.outputs)


@pytest.mark.parametrize("kind", ["DELTA", "FINAL_ONLY"])
async def test_the_app_sees_batches_only_for_streams_of_a_job_with_a_policy(kind):
    import contextvars

    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(output_kind=RequestOutputKind[kind])
    client = BatchingEngineClient(_Engine(_outputs([1] * 4)))  # type: ignore[arg-type]
    assert client.model_config == "the engine's"  # everything else is the engine's
    unbatched = [o async for o in client.generate("p", params, "id")]
    assert len(unbatched) == 4
    context = contextvars.copy_context()
    context.run(stream_policy.set, BatchPolicy(min_size=2, max_size=2, growth=1))
    client = BatchingEngineClient(_Engine(_outputs([1] * 4)))  # type: ignore[arg-type]
    outputs = context.run(client.generate, "p", params, "id")
    seen = [o async for o in outputs]
    assert len(seen) == (2 if kind == "DELTA" else 4)
