"""Native jobs through the real handler on the real engine and the default model."""

import asyncio

import pytest

from tests.helpers import (
    cancel_mid_request,
    handler_with,
    keeps_batch_promise,
    run_job,
    text_of,
    wait_idle,
)
from vllm_worker.batching import BatchPolicy

GREEDY = {"temperature": 0, "max_tokens": 20}


async def test_prompt_job_answers_paris(handler):
    params = {**GREEDY, "ignore_eos": True}
    items = await run_job(
        handler, {"prompt": "The capital city of France is", "sampling_params": params}
    )
    assert len(items) == 1
    assert "Paris" in text_of(items)
    assert items[0]["choices"][0]["finish_reason"] == "length"
    assert items[0]["usage"]["output"] == GREEDY["max_tokens"]


async def test_messages_get_the_chat_template(handler, tokenizer):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    items = await run_job(handler, {"messages": messages, "sampling_params": GREEDY})
    assert "Paris" in text_of(items)
    templated = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert items[0]["usage"]["input"] == len(tokenizer.encode(templated, add_special_tokens=False))


async def test_apply_chat_template_on_a_prompt(handler):
    job = {"prompt": "What is the capital of France?", "apply_chat_template": True}
    items = await run_job(handler, {**job, "sampling_params": GREEDY})
    assert "Paris" in text_of(items)
    raw = await run_job(handler, {"prompt": job["prompt"], "sampling_params": GREEDY})
    assert items[0]["usage"]["input"] > raw[0]["usage"]["input"]


async def test_usage_counts_equal_the_tokenizer(handler, tokenizer):
    prompt = "Write a haiku about nature."
    params = {"max_tokens": 12, "ignore_eos": True, "logprobs": 0}
    items = await run_job(handler, {"prompt": prompt, "sampling_params": params})
    usage = items[0]["usage"]
    assert usage["input"] == len(tokenizer.encode(prompt))
    token_ids = [position["token_id"] for position in items[0]["choices"][0]["logprobs"]]
    assert usage["output"] == len(token_ids) == 12
    assert text_of(items) == tokenizer.decode(token_ids, skip_special_tokens=True)


def _increments(items: list[dict]) -> list[int]:
    outputs = [item["usage"]["output"] for item in items]
    return [b - a for a, b in zip([0, *outputs], outputs, strict=False)]


async def test_stream_batches_follow_the_default_policy(handler):
    job = {
        "prompt": "Write a long story about a dragon.",
        "stream": True,
        "sampling_params": {"max_tokens": 130, "ignore_eos": True},
    }
    items = await run_job(handler, job)
    sizes = _increments(items)
    assert sum(sizes) == 130 and len(sizes) <= 6  # 1, 3, 9, 27, 50, 40 on an idle engine
    assert keeps_batch_promise(sizes, BatchPolicy(min_size=1, max_size=50, growth=3)), sizes
    assert text_of(items).strip()
    assert items[-1]["choices"][0]["finish_reason"] == "length"
    assert all(i["choices"][0]["finish_reason"] is None for i in items[:-1])


async def test_stream_batches_follow_per_job_overrides(handler):
    job = {
        "prompt": "Count to one hundred:",
        "stream": True,
        "min_batch_size": 2,
        "max_batch_size": 8,
        "batch_size_growth_factor": 2,
        "sampling_params": {"max_tokens": 25, "ignore_eos": True},
    }
    sizes = _increments(await run_job(handler, job))
    assert sum(sizes) == 25
    assert keeps_batch_promise(sizes, BatchPolicy(min_size=2, max_size=8, growth=2)), sizes


async def test_streamed_text_equals_non_streamed_text(handler):
    job = {"prompt": "The capital city of France is", "sampling_params": GREEDY}
    whole = await run_job(handler, job)
    streamed = await run_job(handler, {**job, "stream": True})
    assert text_of(streamed) == text_of(whole)
    assert streamed[-1]["usage"] == whole[0]["usage"]


async def test_n_two_gives_two_choices(handler):
    job = {"prompt": "Once upon a time", "sampling_params": {"n": 2, "max_tokens": 8, "seed": 1}}
    items = await run_job(handler, job)
    assert len(items[0]["choices"]) == 2
    assert all(c["tokens"][0] for c in items[0]["choices"])
    assert items[0]["usage"]["output"] == 16 or any(
        c["finish_reason"] == "stop" for c in items[0]["choices"]
    )
    streamed = await run_job(handler, {**job, "stream": True})
    assert all(len(item["choices"]) == 2 for item in streamed)
    assert all(text_of(streamed, i) for i in (0, 1))


async def test_multibyte_characters_never_split(handler):
    target = "🌍🌍 日本語 ✨"
    job = {
        "prompt": "Say something:",
        "stream": True,
        "sampling_params": {"structured_outputs": {"choice": [target]}, "max_tokens": 40},
    }
    items = await run_job(handler, job)
    pieces = [p for item in items for p in item["choices"][0]["tokens"]]
    assert "".join(pieces) == target
    assert all("\ufffd" not in piece for piece in pieces)
    assert len(pieces) > 1


@pytest.mark.parametrize(
    ("job_input", "field"),
    [
        ({}, "input: give `prompt`"),
        ({"prompt": 5}, "prompt"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"prompt": "Hi", "sampling_params": {"max_tokens": "abc"}}, "sampling_params.max_tokens"),
        ({"prompt": "Hi", "sampling_params": {"bogus": 1}}, "sampling_params.bogus"),
        ({"prompt": "Hi", "sampling_params": {"top_p": 3}}, "sampling_params.top_p"),
        ({"prompt": "Hi", "stream": "true"}, "stream"),
        ({"prompt": "word " * 9000}, "prompt"),
    ],
)
async def test_bad_input_fails_the_job_and_the_next_job_works(handler, job_input, field):
    items = await run_job(handler, job_input)
    assert len(items) == 1 and set(items[0]) == {"error"}
    assert isinstance(items[0]["error"], str)
    assert items[0]["error"].startswith(field), items[0]["error"]
    after = await run_job(handler, {"prompt": "Hello", "sampling_params": {"max_tokens": 2}})
    assert after[0]["usage"]["output"] == 2


async def test_too_long_prompt_names_the_limit(handler):
    items = await run_job(handler, {"prompt": "word " * 9000})
    assert "8192" in items[0]["error"]


async def test_closing_the_generator_aborts_the_request(handler, engine):
    job = {
        "prompt": "Tell a story.",
        "stream": True,
        "sampling_params": {"max_tokens": 2000, "ignore_eos": True},
    }
    stream = handler({"id": "closing", "input": job})
    first = await anext(stream)
    assert first["usage"]["output"] == 1
    assert engine.get_num_unfinished_requests() == 1
    await stream.aclose()
    await wait_idle(engine)


async def test_cancelling_the_job_task_aborts_the_request(handler, engine):
    job = {"prompt": "Tell a story.", "sampling_params": {"max_tokens": 2000, "ignore_eos": True}}
    await cancel_mid_request(engine, run_job(handler, job, "cancelled"))


async def test_concurrent_jobs_all_complete(handler, engine):
    jobs = [
        {
            "prompt": f"Fact number {i}:",
            "stream": i % 2 == 0,
            "sampling_params": {"max_tokens": 10, "ignore_eos": True},
        }
        for i in range(12)
    ]
    results = await asyncio.gather(*(run_job(handler, job, f"c{i}") for i, job in enumerate(jobs)))
    assert [r[-1]["usage"]["output"] for r in results] == [10] * 12
    assert all("error" not in item for r in results for item in r)
    await wait_idle(engine)


async def test_max_batch_wait_sends_partial_batches(engine, config):
    handler = handler_with(engine, config, max_batch_wait_ms=1.0)
    job = {
        "prompt": "Count slowly:",
        "stream": True,
        "min_batch_size": 20,
        "max_batch_size": 20,
        "sampling_params": {"max_tokens": 30, "ignore_eos": True},
    }
    increments = _increments(await run_job(handler, job))
    assert sum(increments) == 30
    assert max(increments) < 20  # without the bound: [20, 10]
