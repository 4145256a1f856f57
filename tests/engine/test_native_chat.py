"""Native chat jobs rendered by vLLM's renderer exactly as the OpenAI chat route renders them,
and native errors naming the job field, on the real engine and the default model."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import run_job, text_of, worker_with_flags
from vllm_worker import native, worker
from vllm_worker.config import WorkerSettings
from vllm_worker.default_model import HUB_ID
from vllm_worker.native_input import parse_native

#: A template that shows what the default model's own template drops: names, tool calls and
#: the tool call a result answers.
TOOL_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}"
    "{% if m['name'] is defined and m['name'] %}:{{ m['name'] }}{% endif %}|>"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% elif m['content'] is iterable %}{% for p in m['content'] %}{{ p['text'] }}{% endfor %}"
    "{% endif %}"
    "{% for c in m['tool_calls'] or [] %}[call {{ c['id'] }} {{ c['function']['name'] }}"
    "({{ c['function']['arguments'] | tojson }})]{% endfor %}"
    "{% if m['tool_call_id'] is defined %}(answers {{ m['tool_call_id'] }}){% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOL_HISTORY = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees, sunny"},
]


@pytest.fixture(scope="module")
def templated(engine, config):
    """A second worker on the same engine whose CUSTOM_CHAT_TEMPLATE is `TOOL_TEMPLATE`."""
    return worker_with_flags(engine, config, chat_template=TOOL_TEMPLATE)


async def native_prompt_ids(built: worker.Worker, job_input: dict) -> list[int]:
    """The prompt token ids a native job would hand the engine."""
    state = await built.serving.state()
    request = await native.build_request(parse_native(job_input), state, WorkerSettings())
    return list(request.prompt["prompt_token_ids"])  # type: ignore[typeddict-item]


async def openai_prompt_ids(built: worker.Worker, messages: list[dict], **fields) -> list[int]:
    """The prompt token ids vLLM's OpenAI chat route renders for `messages`."""
    body = {"model": HUB_ID, "messages": messages, "max_tokens": 1, "return_token_ids": True}
    items = await run_job(
        built.handler,
        {"openai_route": "/v1/chat/completions", "openai_input": {**body, **fields}},
    )
    assert "error" not in items[0], items[0]
    return items[0]["prompt_token_ids"]


# Conversations as clients build them: any role order, string or part-list content, names,
# assistant tool calls with null content, tool results naming their call.
words = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)
content = words | st.lists(words.map(lambda t: {"type": "text", "text": t}), min_size=1, max_size=2)
named = st.none() | st.from_regex(r"[a-z]{1,6}", fullmatch=True)


def turn(role: str, text, name) -> dict:
    message = {"role": role, "content": text}
    if name is not None and role in ("system", "user", "assistant"):
        message["name"] = name
    return message


plain_turn = st.builds(turn, st.sampled_from(["system", "user", "assistant"]), content, named)
call_turns = st.builds(
    lambda call_id, args: [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": "lookup", "arguments": json.dumps(args)},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(args)},
    ],
    st.from_regex(r"call_[a-z0-9]{1,6}", fullmatch=True),
    st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), st.integers(), max_size=2),
)
conversations = st.lists(plain_turn.map(lambda t: [t]) | call_turns, min_size=1, max_size=4).map(
    lambda groups: [message for group in groups for message in group]
)

property_settings = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@property_settings
@given(messages=conversations)
async def test_native_messages_render_as_the_openai_route_does(worker, messages):
    assert await native_prompt_ids(worker, {"messages": messages}) == await openai_prompt_ids(
        worker, messages
    )


@property_settings
@given(messages=conversations)
async def test_a_custom_template_renders_the_same_on_both_paths(templated, messages):
    native_ids = await native_prompt_ids(templated, {"messages": messages})
    assert native_ids == await openai_prompt_ids(templated, messages)


@property_settings
@given(prompt=words)
async def test_apply_chat_template_is_a_one_turn_chat(worker, prompt):
    native_ids = await native_prompt_ids(worker, {"prompt": prompt, "apply_chat_template": True})
    assert native_ids == await openai_prompt_ids(worker, [{"role": "user", "content": prompt}])


async def test_the_custom_template_shows_calls_names_and_results(templated, tokenizer):
    text = tokenizer.decode(await native_prompt_ids(templated, {"messages": TOOL_HISTORY}))
    # vLLM hands the template a call's arguments as an object, parsed from their JSON.
    assert text == (
        "<|user|>What is the weather in Paris?"
        '<|assistant|>[call call_1 get_weather({"city": "Paris"})]'
        "<|tool|>18 degrees, sunny(answers call_1)<|assistant|>"
    )


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        TOOL_HISTORY,
        [{"role": "system", "content": "Be brief.", "name": "rules"}, *TOOL_HISTORY],
    ],
    ids=["part-list", "tool-history", "names"],
)
async def test_native_usage_input_equals_openai_prompt_tokens(handler, worker, messages):
    items = await run_job(
        handler, {"messages": messages, "sampling_params": {"max_tokens": 3, "temperature": 0}}
    )
    assert "error" not in items[0], items[0]
    assert items[0]["usage"]["input"] == len(await openai_prompt_ids(worker, messages))
    assert items[0]["choices"][0]["finish_reason"] in ("stop", "length")


async def test_part_list_content_is_the_same_prompt_as_a_string(handler):
    def job(content):
        return {
            "messages": [{"role": "user", "content": content}],
            "sampling_params": {"max_tokens": 8, "temperature": 0},
        }

    as_string = await run_job(handler, job("Say hello."))
    as_parts = await run_job(handler, job([{"type": "text", "text": "Say hello."}]))
    assert as_parts == as_string


async def test_custom_chat_template_applies_to_native_jobs(templated, tokenizer):
    question = [{"role": "user", "content": "Hi"}]
    items = await run_job(
        templated.handler, {"messages": question, "sampling_params": {"max_tokens": 2}}
    )
    expected = await openai_prompt_ids(templated, question)
    assert items[0]["usage"]["input"] == len(expected)
    # The chat template settings vLLM uses trim the newline after a block tag.
    assert tokenizer.decode(expected) == "<|user|>Hi<|assistant|>"


async def test_chat_template_kwargs_reach_the_template(engine, config):
    template = "{{ greeting | default('none') }}: {{ messages[0]['content'] }}"
    built = worker_with_flags(engine, config, chat_template=template)
    job = {"messages": [{"role": "user", "content": "Hi"}]}
    plain = await native_prompt_ids(built, job)
    greeted = await native_prompt_ids(built, {**job, "chat_template_kwargs": {"greeting": "hello"}})
    tokenizer = (await built.serving.state()).tokenizer
    assert (tokenizer.decode(plain), tokenizer.decode(greeted)) == ("none: Hi", "hello: Hi")


async def test_a_chat_template_in_the_request_is_refused(handler):
    job = {"prompt": "Hi", "apply_chat_template": True}
    items = await run_job(handler, {**job, "chat_template_kwargs": {"chat_template": "{{ 1 }}"}})
    assert items[0]["error"].startswith("prompt: Chat template is passed with request"), items
    assert "TRUST_REQUEST_CHAT_TEMPLATE (--trust-request-chat-template)" in items[0]["error"]


@pytest.mark.parametrize("field", ["max_tokens", "temperature", "seed", "stop"])
async def test_null_sampling_params_mean_not_given(handler, field):
    params = {field: None, "ignore_eos": True}
    items = await run_job(handler, {"prompt": "Hi", "sampling_params": params})
    assert items[0]["usage"]["output"] == 16, items
    assert items[0]["choices"][0]["finish_reason"] == "length"


async def test_null_job_fields_and_structured_output_members_mean_not_given(handler):
    job = {
        "prompt": "Is Paris in France? Answer:",
        "sampling_params": {"structured_outputs": {"choice": ["yes", "no"], "regex": None}},
        "stream": None,
        "max_batch_size": None,
    }
    items = await run_job(handler, job)
    assert text_of(items) in ("yes", "no"), items
    assert (await run_job(handler, {"prompt": "Hi", "sampling_params": None}))[0]["usage"]


@pytest.mark.parametrize("stream", [False, True])
async def test_prompt_logprobs_are_returned_per_prompt_token(handler, tokenizer, stream):
    job = {
        "prompt": "The capital of France is",
        "stream": stream,
        "sampling_params": {"prompt_logprobs": 2, "max_tokens": 4, "temperature": 0},
    }
    items = await run_job(handler, job)
    prompt_ids = tokenizer.encode("The capital of France is")
    positions = items[0]["prompt_logprobs"]
    assert len(positions) == len(prompt_ids) == items[0]["usage"]["input"]
    assert positions[0] is None
    for token_id, position in zip(prompt_ids[1:], positions[1:], strict=True):
        assert position["token_id"] == token_id
        assert position["logprob"] <= 0
        ids = {top["token_id"] for top in position["top_logprobs"]}
        assert token_id in ids and 2 <= len(ids) <= 3
    assert all("prompt_logprobs" not in item for item in items[1:])


async def test_logprob_token_ids_alone_return_those_tokens(handler):
    wanted = [11, 22, 33]
    job = {"prompt": "Hello", "sampling_params": {"logprob_token_ids": wanted, "max_tokens": 3}}
    items = await run_job(handler, job)
    positions = items[0]["choices"][0]["logprobs"]
    assert len(positions) == 3
    for position in positions:
        ids = [top["token_id"] for top in position["top_logprobs"]]
        assert set(wanted) <= set(ids) <= {*wanted, position["token_id"]}


@pytest.mark.parametrize("width", [{"n": 11}, {"n": 2, "best_of": 12}, {"n": 21}])
async def test_beam_search_wider_than_ten(handler, width):
    params = {"use_beam_search": True, "temperature": 0, "max_tokens": 4, **width}
    items = await run_job(
        handler, {"prompt": "The capital of France is", "sampling_params": params}
    )
    assert "error" not in items[0], items[0]
    assert len(items[0]["choices"]) == width["n"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"stop_token_ids": [10**7]}, "sampling_params.stop_token_ids: token_id(s) [10000000]"),
        ({"logprobs": 50}, "sampling_params.logprobs: Requested sample logprobs of 50"),
        ({"prompt_logprobs": 50}, "sampling_params.prompt_logprobs: Requested prompt logprobs"),
        ({"logit_bias": {"10000000": 1.0}}, "sampling_params.logit_bias: token_id(s)"),
        ({"allowed_token_ids": [10**7]}, "sampling_params.allowed_token_ids:"),
        ({"logprob_token_ids": [10**7]}, "sampling_params.logprob_token_ids: token_id(s)"),
        (
            {"logprobs": 2, "logprob_token_ids": [1, 2, 3]},
            "sampling_params.logprob_token_ids: When both logprobs",
        ),
        (
            {"structured_outputs": {"choice": []}},
            "sampling_params.structured_outputs: Choice '[]' cannot be an empty list",
        ),
        (
            {"structured_outputs": {"grammar": " "}},
            "sampling_params.structured_outputs: structured_outputs.grammar cannot be an empty",
        ),
        (
            {"thinking_token_budget": 5},
            "sampling_params.thinking_token_budget: thinking_token_budget is set but",
        ),
        ({"max_tokens": 9000}, "sampling_params.max_tokens: max_tokens=9000 cannot be greater"),
    ],
)
async def test_engine_checks_name_the_sampling_parameter(handler, params, expected):
    items = await run_job(handler, {"prompt": "Hello", "sampling_params": params})
    assert items[0]["error"].startswith(expected), items[0]
    after = await run_job(handler, {"prompt": "Hello", "sampling_params": {"max_tokens": 2}})
    assert after[0]["usage"]["output"] == 2


async def test_engine_errors_name_variables_not_flags(handler):
    items = await run_job(
        handler, {"prompt": "Hi", "sampling_params": {"thinking_token_budget": 5}}
    )
    assert "REASONING_PARSER (--reasoning-parser)" in items[0]["error"], items
    body = {
        "model": HUB_ID,
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "required",
    }
    items = await run_job(handler, {"openai_route": "/v1/chat/completions", "openai_input": body})
    error = json.loads(items[0]["error"])["error"]
    assert "TOOL_CALL_PARSER (--tool-call-parser)" in error["message"], error
    assert (error["code"], error["type"]) == (400, "BadRequestError")


async def test_bad_messages_name_the_field(handler):
    cases = {
        "messages.0.content": [{"role": "user", "content": 3}],
        "messages.0.tool_calls: Input should be a valid list": [
            {"role": "assistant", "tool_calls": "x"}
        ],
        "messages.1.tool_calls.0.function.arguments: Field required": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}],
            },
        ],
        "messages.1.content.0.text: Field required": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text"}]},
        ],
    }
    for field, messages in cases.items():
        items = await run_job(handler, {"messages": messages})
        assert items[0]["error"].startswith(field), items[0]


async def test_native_jobs_give_vllm_rendered_inputs(handler, caplog):
    caplog.set_level(logging.WARNING)
    await run_job(handler, {"prompt": "Hi", "sampling_params": {"max_tokens": 2}})
    await run_job(handler, {"messages": TOOL_HISTORY, "sampling_params": {"max_tokens": 2}})
    beam = {"use_beam_search": True, "temperature": 0, "n": 2, "max_tokens": 2}
    await run_job(handler, {"prompt": "Hi", "sampling_params": beam})
    assert "Passing raw prompts" not in caplog.text
