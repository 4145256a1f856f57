"""OpenAI jobs through the real handler, on the real engine and the default model."""

import asyncio
import json

import pytest

from tests.helpers import (
    cancel_mid_request,
    handler_with,
    keeps_batch_promise,
    run_job,
    wait_idle,
    worker_with_flags,
)
from vllm_worker.batching import BatchPolicy
from vllm_worker.default_model import HUB_ID

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
DEFAULT_POLICY = BatchPolicy(min_size=1, max_size=50, growth=3)


def chat(**fields) -> dict:
    body = {"model": HUB_ID, "messages": QUESTION, "temperature": 0, "max_tokens": 30}
    return {"openai_route": "/v1/chat/completions", "openai_input": {**body, **fields}}


def completion(**fields) -> dict:
    body = {"model": HUB_ID, "prompt": "The capital city of France is", "max_tokens": 20}
    return {"openai_route": "/v1/completions", "openai_input": {**body, "temperature": 0, **fields}}


def events(items: list[str]) -> list[list[str]]:
    """The SSE events of each yielded text; every yield holds whole events only."""
    assert all(isinstance(item, str) and item.endswith("\n\n") for item in items), items
    return [item.removesuffix("\n\n").split("\n\n") for item in items]


def chunks(items: list[str]) -> list[dict]:
    """The JSON objects of a raw stream, checking its form: `data:` events, `[DONE]` last."""
    flat = [event for batch in events(items) for event in batch]
    assert all(event.startswith("data: ") for event in flat)
    assert flat[-1] == "data: [DONE]"
    assert "data: [DONE]" not in flat[:-1]
    return [json.loads(event.removeprefix("data: ")) for event in flat[:-1]]


def batch_sizes(parsed: list[dict]) -> list[int]:
    """Tokens each chunk carries, counted by its log-probabilities (ask for `logprobs`)."""
    sizes = []
    for chunk in parsed:
        for choice in chunk["choices"]:
            if logprobs := choice.get("logprobs"):
                sizes.append(len(logprobs.get("content") or logprobs.get("tokens") or ()))
    return sizes


def error_of(items: list) -> dict:
    """The OpenAI error object a failed job carries as a JSON string."""
    assert len(items) == 1 and set(items[0]) == {"error"}, items
    assert isinstance(items[0]["error"], str)
    return json.loads(items[0]["error"])["error"]


async def test_chat_answers_paris_with_usage(handler):
    items = await run_job(handler, chat())
    assert len(items) == 1
    response = items[0]
    assert response["object"] == "chat.completion"
    assert response["model"] == HUB_ID
    assert "Paris" in response["choices"][0]["message"]["content"]
    assert response["choices"][0]["finish_reason"] == "stop"
    usage = response["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_stream_equals_the_whole_answer(handler):
    whole = (await run_job(handler, chat()))[0]["choices"][0]["message"]["content"]
    items = await run_job(handler, chat(stream=True, logprobs=True))
    parsed = chunks(items)
    assert parsed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed) == whole
    assert parsed[-1]["choices"][0]["finish_reason"] == "stop"
    assert keeps_batch_promise(batch_sizes(parsed), DEFAULT_POLICY)
    # One item per batch: the role-only opening chunk rides along with the first.
    assert len(items) == len(batch_sizes(parsed))


async def test_stream_batches_follow_the_default_policy(handler):
    job = completion(max_tokens=100, ignore_eos=True, stream=True, logprobs=0)
    sizes = batch_sizes(chunks(await run_job(handler, job)))
    assert sum(sizes) == 100
    assert keeps_batch_promise(sizes, DEFAULT_POLICY), sizes
    assert len(sizes) <= 6  # 1, 3, 9, 27, 50, 10 on an idle engine; fewer when it merges


async def test_stream_batches_follow_per_job_overrides(handler):
    job = {
        **completion(max_tokens=25, ignore_eos=True, stream=True),
        "min_batch_size": 2,
        "max_batch_size": 8,
        "batch_size_growth_factor": 2,
    }
    job["openai_input"]["logprobs"] = 0
    sizes = batch_sizes(chunks(await run_job(handler, job)))
    assert sum(sizes) == 25
    assert keeps_batch_promise(sizes, BatchPolicy(min_size=2, max_size=8, growth=2)), sizes


async def test_completions_both_ways(handler):
    whole = (await run_job(handler, completion()))[0]
    assert whole["object"] == "text_completion"
    assert "Paris" in whole["choices"][0]["text"]
    assert whole["usage"]["completion_tokens"] > 0
    items = await run_job(handler, completion(stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks(items)) == whole["choices"][0]["text"]


async def test_models_list_shows_the_served_name(handler):
    items = await run_job(handler, {"openai_route": "/v1/models"})
    assert len(items) == 1
    assert [model["id"] for model in items[0]["data"]] == [HUB_ID]


async def test_structured_output_follows_the_json_schema(handler):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    items = await run_job(handler, chat(response_format=response_format, max_tokens=100))
    answer = json.loads(items[0]["choices"][0]["message"]["content"])
    assert set(answer) == {"city", "country"}
    assert all(isinstance(value, str) for value in answer.values())


async def test_n_two_gives_two_choices(handler):
    job = chat(n=2, temperature=0.8, seed=1, max_tokens=8)
    items = await run_job(handler, job)
    assert sorted(c["index"] for c in items[0]["choices"]) == [0, 1]
    assert all(c["message"]["content"] for c in items[0]["choices"])
    streamed = chunks(
        await run_job(handler, {**job, "openai_input": {**job["openai_input"], "stream": True}})
    )
    assert {c["choices"][0]["index"] for c in streamed} == {0, 1}


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": HUB_ID, "messages": QUESTION, "max_tokens": "abc"}, 400, "max_tokens"),
        ({"model": "no-such-model", "messages": QUESTION}, 404, "model"),
        ({"model": HUB_ID}, 400, "messages"),
    ],
)
async def test_bad_requests_give_openai_errors(handler, body, code, param):
    job = {"openai_route": "/v1/chat/completions", "openai_input": body}
    error = error_of(await run_job(handler, job))
    assert error["code"] == code
    assert param in error["param"]
    assert error["message"] and error["type"]
    assert (await run_job(handler, chat(max_tokens=2)))[0]["usage"]["completion_tokens"] == 2


async def test_too_long_prompt_is_an_openai_error(handler):
    error = error_of(await run_job(handler, completion(prompt="word " * 9000)))
    assert error["code"] == 400
    assert "8192" in error["message"]


async def test_a_streaming_request_that_fails_validation_fails_the_job(handler):
    error = error_of(await run_job(handler, chat(stream=True, max_tokens=-1)))
    assert error["code"] == 400


@pytest.mark.parametrize("route", ["/v1/nope", "/health", "/metrics", "/ping", "v1/models"])
async def test_unknown_and_server_routes_are_refused(handler, route):
    error = error_of(await run_job(handler, {"openai_route": route}))
    assert (error["code"], error["type"], error["param"]) == (404, "NotFoundError", "openai_route")
    assert "supported routes: " in error["message"]
    supported = error["message"].split("supported routes: ")[1].split(", ")
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= set(supported)
    assert route not in supported


async def test_other_routes_of_vllm_work_as_jobs(handler):
    tokens = await run_job(
        handler,
        {"openai_route": "/tokenize", "openai_input": {"model": HUB_ID, "prompt": "Hello world"}},
    )
    assert tokens[0]["count"] == len(tokens[0]["tokens"]) > 0
    text = await run_job(
        handler,
        {
            "openai_route": "/detokenize",
            "openai_input": {"model": HUB_ID, "tokens": tokens[0]["tokens"]},
        },
    )
    assert text[0]["prompt"] == "Hello world"
    body = {"model": HUB_ID, "input": "What is the capital of France?", "max_output_tokens": 16}
    response = await run_job(handler, {"openai_route": "/v1/responses", "openai_input": body})
    assert response[0]["object"] == "response"
    streamed = await run_job(
        handler, {"openai_route": "/v1/responses", "openai_input": {**body, "stream": True}}
    )
    assert events(streamed)[0][0].startswith("event: response.created\ndata: {")
    message = {"model": HUB_ID, "messages": QUESTION, "max_tokens": 16}
    anthropic = await run_job(handler, {"openai_route": "/v1/messages", "openai_input": message})
    assert anthropic[0]["type"] == "message"


@pytest.fixture(scope="module")
def parsed_handler(engine, config):
    """A second handler on the same engine, with RAW_OPENAI_OUTPUT=0."""
    return handler_with(engine, config, raw_openai_output=False)


async def test_raw_output_off_yields_lists_of_chunks(parsed_handler, handler):
    raw = chunks(await run_job(handler, chat(stream=True)))
    items = await run_job(parsed_handler, chat(stream=True, logprobs=True))
    assert all(isinstance(item, list) and item for item in items)
    # An item per batch, the first also holding the role-only chunk, none with [DONE].
    assert [batch_sizes(item) for item in items if batch_sizes(item)] == [
        [size] for size in batch_sizes([c for item in items for c in item])
    ]
    parsed = [chunk for item in items for chunk in item]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in parsed)
    assert text == "".join(c["choices"][0]["delta"].get("content") or "" for c in raw)
    whole = await run_job(parsed_handler, chat())
    assert whole[0]["choices"][0]["message"]["content"] == text


async def test_a_broken_serving_setting_stops_start_up_and_fails_every_job(engine, config):
    from vllm_worker.serving import ServingError

    # config.load refuses this; a template file removed after start-up gets this far.
    broken = worker_with_flags(engine, config, chat_template="/gone.jinja")
    with pytest.raises(ServingError, match=r"could not start.*/gone\.jinja"):
        await broken.start(stats_interval_s=3600)
    # Under the SDK's development modes nothing calls `start`: each job reports the failure.
    error = error_of(await run_job(broken.handler, {"openai_route": "/v1/models"}))
    assert (error["code"], error["type"]) == (500, "InternalServerError")
    assert "could not start" in error["message"] and "/gone.jinja" in error["message"]
    native = await run_job(broken.handler, {"prompt": "Hi", "sampling_params": {"max_tokens": 2}})
    assert len(native) == 1 and "/gone.jinja" in native[0]["error"]


LONG = {"max_tokens": 2000, "ignore_eos": True, "temperature": 0.8}


async def test_closing_a_stream_aborts_the_request(handler, engine):
    stream = handler({"id": "openai-closing", "input": completion(stream=True, **LONG)})
    first = await anext(stream)
    assert first.startswith("data: ")
    # The first batch arrived while the request still runs: the stream really streams.
    assert engine.get_num_unfinished_requests() == 1
    await stream.aclose()
    await wait_idle(engine)


@pytest.mark.parametrize("stream", [False, True])
async def test_cancelling_the_job_task_aborts_the_request(handler, engine, stream):
    job = run_job(handler, chat(stream=stream, **LONG), "openai-cancelled")
    await cancel_mid_request(engine, job)


async def test_concurrent_openai_and_native_jobs(handler, engine):
    jobs = [
        chat(max_tokens=10, ignore_eos=True, stream=True, stream_options={"include_usage": True})
        if i % 3 and i % 2 == 0
        else chat(max_tokens=10, ignore_eos=True)
        if i % 3
        else {"prompt": "Hi", "sampling_params": {"max_tokens": 10, "ignore_eos": True}}
        for i in range(9)
    ]
    results = await asyncio.gather(
        *(run_job(handler, job, f"mix{i}") for i, job in enumerate(jobs))
    )
    for i, items in enumerate(results):
        if i % 3 == 0:
            assert items[-1]["usage"]["output"] == 10
        elif i % 2 == 0:
            assert chunks(items)[-1]["usage"]["completion_tokens"] == 10
        else:
            assert items[0]["usage"]["completion_tokens"] == 10
    await wait_idle(engine)


@pytest.fixture
def client(handler):
    """The official OpenAI client, its calls turned into jobs as RunPod does.

    The relay answers with the stream's SSE text or the first item as JSON; a failed job's
    error JSON becomes the error response, with its code as the HTTP status.
    """
    import httpx
    from openai import AsyncOpenAI

    async def relay(request: httpx.Request) -> httpx.Response:
        job_input: dict = {"openai_route": request.url.path.removeprefix("/v2/endpoint/openai")}
        if request.content:
            job_input["openai_input"] = json.loads(request.content)
        items = await run_job(handler, job_input, "relayed")
        if isinstance(items[0], str):
            stream = "".join(items).encode()
            return httpx.Response(
                200, content=stream, headers={"content-type": "text/event-stream"}
            )
        if set(items[0]) == {"error"}:
            error = json.loads(items[0]["error"])
            return httpx.Response(error["error"]["code"], json=error)
        return httpx.Response(200, json=items[0])

    return AsyncOpenAI(
        api_key="key",
        base_url="https://api.runpod.ai/v2/endpoint/openai/v1",
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(relay)),
        max_retries=0,
    )


async def test_the_official_openai_client_reads_the_outputs(client):
    import openai

    models = await client.models.list()
    assert [model.id for model in models.data] == [HUB_ID]

    chat_args = {"model": HUB_ID, "messages": QUESTION, "temperature": 0, "max_tokens": 30}
    answer = await client.chat.completions.create(**chat_args)
    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0
    stream = await client.chat.completions.create(**chat_args, stream=True)
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert streamed == answer.choices[0].message.content

    text = await client.completions.create(
        model=HUB_ID, prompt="The capital city of France is", max_tokens=20, temperature=0
    )
    assert "Paris" in text.choices[0].text

    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(**{**chat_args, "model": "no-such-model"})
    assert "no-such-model" in caught.value.message
    assert caught.value.body["type"] == "NotFoundError"


async def test_max_batch_wait_sends_partial_batches(engine, config):
    waiting = handler_with(engine, config, max_batch_wait_ms=1.0)
    job = {
        **completion(max_tokens=30, ignore_eos=True, stream=True),
        "min_batch_size": 20,
        "max_batch_size": 20,
    }
    job["openai_input"]["logprobs"] = 0
    sizes = batch_sizes(chunks(await run_job(waiting, job)))
    assert sum(sizes) == 30
    assert max(sizes) < 20  # without the bound: [20, 10]
