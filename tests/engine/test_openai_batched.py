"""What vLLM's OpenAI layer adds on top of the engine still holds when its streams come in
batches (`coalesce.BatchingEngineClient`): the tool-call parser, logprobs, `n > 1`, usage and
finish reasons. Each test compares a streamed request with the same request not streamed, on the
real engine and the default model. (The reasoning parser needs a model with `<think>` tokens:
tests/engine/local/test_models_tools.py.)"""

from __future__ import annotations

import pytest

from tests.engine.test_openai_jobs import chunks
from tests.helpers import run_job, worker_with_flags
from vllm_worker.default_model import HUB_ID

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
        },
    },
}


def chat_job(stream: bool, **fields) -> dict:
    body = {
        "model": HUB_ID,
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "temperature": 0,
        "max_tokens": 40,
        "stream": stream,
        **fields,
    }
    return {"openai_route": "/v1/chat/completions", "openai_input": body, "max_batch_size": 4}


def merged_deltas(parsed: list[dict]) -> dict[int, dict]:
    """Per choice: the content, reasoning and tool-call arguments of a stream, concatenated."""
    merged: dict[int, dict] = {}
    for chunk in parsed:
        for choice in chunk["choices"]:
            into = merged.setdefault(
                choice["index"], {"content": "", "reasoning": "", "calls": {}, "finish": None}
            )
            delta = choice.get("delta") or {}
            into["content"] += delta.get("content") or ""
            into["reasoning"] += delta.get("reasoning") or delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or ():
                slot = into["calls"].setdefault(call["index"], {"name": "", "arguments": ""})
                function = call.get("function") or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            into["finish"] = choice.get("finish_reason") or into["finish"]
    return merged


@pytest.fixture(scope="module")
def tool_worker(engine, config):
    return worker_with_flags(
        engine, config, enable_auto_tool_choice=True, tool_call_parser="hermes"
    )


async def test_tool_calls_do_not_depend_on_the_batch_size(tool_worker):
    """The tool parser sees a stream's tokens in batches: whatever it makes of them, it makes
    the same of one token at a time and of larger batches."""
    job = {"tools": [WEATHER_TOOL], "tool_choice": "required"}
    results = []
    for size in (1, 3, 16):
        items = await run_job(
            tool_worker.handler,
            {**chat_job(True, **job), "max_batch_size": size, "min_batch_size": size},
        )
        results.append(merged_deltas(chunks(items))[0])
    assert results[0]["calls"], results[0]  # the parser found a call
    assert results[1] == results[0] and results[2] == results[0]


async def test_n_choices_logprobs_and_usage_match_the_whole_answer(handler):
    fields = {
        "n": 2,
        "temperature": 0.8,
        "seed": 7,
        "logprobs": True,
        "top_logprobs": 2,
    }
    usage = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    whole = (await run_job(handler, chat_job(False, **fields)))[0]
    items = await run_job(handler, chat_job(True, **fields, **usage))
    parsed = chunks(items)
    streamed = merged_deltas(parsed)
    for choice in whole["choices"]:
        assert streamed[choice["index"]]["content"] == choice["message"]["content"]
        assert streamed[choice["index"]]["finish"] == choice["finish_reason"]
        tokens = [
            entry["token"]
            for chunk in parsed
            for c in chunk["choices"]
            if c["index"] == choice["index"] and c.get("logprobs")
            for entry in c["logprobs"]["content"]
        ]
        assert tokens == [entry["token"] for entry in choice["logprobs"]["content"]]
        assert all(
            len(entry["top_logprobs"]) == 2
            for chunk in parsed
            for c in chunk["choices"]
            if c.get("logprobs")
            for entry in c["logprobs"]["content"]
        )
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert [parsed[-1]["usage"][k] for k in counts] == [whole["usage"][k] for k in counts]
    # Continuous usage: every chunk reports counts.
    assert all(chunk.get("usage") for chunk in parsed)
