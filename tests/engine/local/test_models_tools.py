"""Tool calling and reasoning models end to end: the official `openai` client against the local
endpoint, the worker and a real CPU engine behind it.

Tools run on the default model (SmolLM2-135M-Instruct) with vLLM's hermes parser and a chat
template that shows the tools, written here. Reasoning runs on `tests.models.reasoning`, a
tiny model whose answer is known token by token. One endpoint per model, one after the other
(class-scoped: only one engine runs at a time).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.engine.test_openai_batched import merged_deltas
from tests.engine.test_openai_jobs import chunks
from tests.helpers import text_of
from tests.models import reasoning
from tests.models.tools import HERMES_TEMPLATE
from vllm_worker.local.testing import LocalEndpoint

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_SCHEMA,
    },
}
NAMED = {"type": "function", "function": {"name": "get_weather"}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
#: Enough for the grammar-forced call: on this model `<tool_call>` alone is 8 tokens.
CALL_TOKENS = 100
#: README's tool-calling request (Models > Tool calling), beside the served model's name.
FORCED_CALL = {
    "messages": QUESTION,
    "tools": [WEATHER_TOOL],
    "tool_choice": "required",
    "temperature": 0,
    "max_tokens": CALL_TOKENS,
}
#: README's reasoning request (Models > Reasoning models), beside the served model's name.
REASONING_REQUEST = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
    "max_tokens": 20,
}


def client_of(endpoint: LocalEndpoint) -> Any:
    """The official client on the endpoint's OpenAI routes; no retries, which would hide a
    failure."""
    from openai import OpenAI

    return OpenAI(
        api_key=endpoint.api_key,
        base_url=f"{endpoint.url}/openai/v1",
        timeout=120,
        max_retries=0,
    )


def streamed(chunks: Any) -> dict[str, Any]:
    """One choice's stream put together: content, reasoning, calls and finish reason."""
    merged: dict[str, Any] = {"content": "", "reasoning": "", "calls": {}, "finish": None}
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            merged["content"] += delta.content or ""
            merged["reasoning"] += (delta.model_extra or {}).get("reasoning") or ""
            for call in delta.tool_calls or ():
                slot = merged["calls"].setdefault(call.index, {"name": "", "arguments": ""})
                slot["name"] += (call.function and call.function.name) or ""
                slot["arguments"] += (call.function and call.function.arguments) or ""
            merged["finish"] = choice.finish_reason or merged["finish"]
    return merged


def endpoint_for(log: Path, **env: str) -> Iterator[LocalEndpoint]:
    endpoint = LocalEndpoint(log, **env)
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()


class TestToolCalls:
    @pytest.fixture(scope="class")
    def endpoint(self, tmp_path_factory) -> Iterator[LocalEndpoint]:
        folder = tmp_path_factory.mktemp("tools")
        template = folder / "hermes.jinja"
        template.write_text(HERMES_TEMPLATE)
        yield from endpoint_for(
            folder / "endpoint.log",
            ENABLE_AUTO_TOOL_CHOICE="true",
            TOOL_CALL_PARSER="hermes",
            CUSTOM_CHAT_TEMPLATE=str(template),
            # constrain arguments by each tool's schema, as if every tool were `strict: true`
            TOOL_STRICT_LEVEL="parameter",
        )

    @pytest.fixture(scope="class")
    def client(self, endpoint) -> Any:
        return client_of(endpoint)

    @pytest.fixture(scope="class")
    def model(self, client) -> str:
        return str(client.models.list().data[0].id)

    def ask(self, client: Any, model: str, **fields: Any) -> Any:
        return client.chat.completions.create(
            model=model, temperature=0, tools=[WEATHER_TOOL], **fields
        )

    @pytest.mark.parametrize(
        ("tool_choice", "finish"), [("required", "tool_calls"), (NAMED, "stop")]
    )
    def test_forced_call_has_schema_valid_arguments_streamed_or_not(
        self, client, model, tool_choice, finish
    ):
        request = {"messages": QUESTION, "tool_choice": tool_choice, "max_tokens": CALL_TOKENS}
        whole = self.ask(client, model, **request).choices[0]
        calls = whole.message.tool_calls
        assert calls is not None and len(calls) == 1, whole
        assert calls[0].function.name == "get_weather"
        arguments = json.loads(calls[0].function.arguments)
        jsonschema.validate(arguments, WEATHER_SCHEMA)
        assert arguments == {"city": "Paris"}
        # OpenAI's rule, which vLLM follows: "tool_calls" for required, "stop" for named
        assert whole.finish_reason == finish

        parts = streamed(self.ask(client, model, **request, stream=True))
        assert list(parts["calls"].values()) == [
            {"name": "get_weather", "arguments": parts["calls"][0]["arguments"]}
        ], parts
        assert json.loads(parts["calls"][0]["arguments"]) == arguments
        assert parts["content"] == "" and parts["finish"] == finish

    def test_tool_result_is_answered(self, client, model):
        first = client.chat.completions.create(model=model, **FORCED_CALL)
        call = first.choices[0].message.tool_calls[0]
        result = "18 degrees and sunny"
        conversation = [
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": result},
        ]
        answer = self.ask(client, model, messages=conversation, tool_choice="none", max_tokens=30)
        message = answer.choices[0].message
        assert not message.tool_calls
        # the 135M model answers by repeating the result it was given (seen: the result in
        # <tool_response> tags); what matters here is that the result reached it
        assert "18 degrees" in message.content, answer
        # the call and its result were in the prompt: it grew by at least the result's tokens
        assert answer.usage.prompt_tokens > first.usage.prompt_tokens + len(result.split())

    def test_call_cut_by_max_tokens_stays_text(self, client, model):
        """vLLM's own server does the same (see README, Models > Tool calling): a forced call cut
        before `</tool_call>` fails the hermes parser, and the text comes back as content."""
        whole = self.ask(client, model, messages=QUESTION, tool_choice=NAMED, max_tokens=12)
        choice = whole.choices[0]
        assert choice.finish_reason == "length"
        assert not choice.message.tool_calls
        assert choice.message.content.startswith("<tool_call>")


class TestReasoning:
    @pytest.fixture(scope="class")
    def endpoint(self, tmp_path_factory) -> Iterator[LocalEndpoint]:
        folder = reasoning.ensure_reasoning_model()
        yield from endpoint_for(
            tmp_path_factory.mktemp("reasoning") / "endpoint.log",
            MODEL_NAME=str(folder),
            REASONING_PARSER="deepseek_r1",
        )

    @pytest.fixture(scope="class")
    def client(self, endpoint) -> Any:
        return client_of(endpoint)

    def ask(self, client: Any, **fields: Any) -> Any:
        model = client.models.list().data[0].id
        return client.chat.completions.create(model=model, **REASONING_REQUEST, **fields)

    def test_reasoning_comes_apart_from_the_answer(self, client):
        choice = self.ask(client).choices[0]
        assert choice.message.model_extra["reasoning"] == reasoning.REASONING
        assert choice.message.content == reasoning.CONTENT
        assert choice.finish_reason == "stop"

    def test_reasoning_comes_apart_streamed(self, client):
        parts = streamed(self.ask(client, stream=True))
        assert parts["reasoning"] == reasoning.REASONING
        assert parts["content"] == reasoning.CONTENT
        assert parts["finish"] == "stop"

    @pytest.mark.parametrize("size", [1, 3, 16])
    def test_reasoning_is_parsed_the_same_at_any_batch_size(self, endpoint, size):
        """The parser sees a stream's tokens in batches of `size` (the job's batch policy)."""
        body = {
            "model": str(reasoning.ensure_reasoning_model()),
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
            "max_tokens": 20,
            "stream": True,
        }
        job = {"openai_route": "/v1/chat/completions", "openai_input": body}
        done = endpoint.wait_final(
            endpoint.run({**job, "min_batch_size": size, "max_batch_size": size})
        )
        assert done["status"] == "COMPLETED", done
        merged = merged_deltas(chunks(done["output"]))[0]
        assert (merged["reasoning"], merged["content"]) == (reasoning.REASONING, reasoning.CONTENT)

    def test_native_job_keeps_the_raw_text(self, endpoint):
        job = {
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "sampling_params": {"temperature": 0, "max_tokens": 20},
        }
        done = endpoint.wait_final(endpoint.run(job))
        assert done["status"] == "COMPLETED", done
        assert text_of(done["output"]) == f"<think>{reasoning.REASONING}</think>{reasoning.CONTENT}"
