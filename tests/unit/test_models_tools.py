"""The locally built test models' pieces that need no engine: the hermes template renders a
tool conversation the way vLLM's hermes parser reads it back, and the reasoning model's
answer is the token chain it is built from."""

from __future__ import annotations

import json

import pytest

from tests.models import reasoning
from tests.models.tools import HERMES_TEMPLATE

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
CONVERSATION = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"},
]


@pytest.fixture(scope="module")
def tokenizer():
    return reasoning._tokenizer()


def test_hermes_template_renders_tools_calls_and_results(tokenizer):
    text = tokenizer.apply_chat_template(
        CONVERSATION,
        tools=[TOOL],
        chat_template=HERMES_TEMPLATE,
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == (
        "<|im_start|>system\n"
        "You may call one or more functions to answer the user. Their signatures:\n"
        f"<tools>\n{json.dumps(TOOL)}\n</tools>\n"
        'For each call, answer <tool_call>{"name": <function-name>, "arguments": '
        "<args-json-object>}</tool_call><|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>18 degrees</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_hermes_parser_reads_back_the_rendered_call(tokenizer):
    from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

    text = tokenizer.apply_chat_template(
        CONVERSATION[:2], tools=[TOOL], chat_template=HERMES_TEMPLATE, tokenize=False
    )
    turn = text.rsplit("<|im_start|>assistant\n", 1)[1].removesuffix("<|im_end|>\n")
    found = Hermes2ProToolParser(tokenizer).extract_tool_calls(turn, request=None)  # type: ignore[arg-type]
    assert found.tools_called
    assert [(c.function.name, json.loads(c.function.arguments)) for c in found.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_reasoning_answer_is_the_built_chain(tokenizer):
    ids = reasoning.answer_ids(tokenizer)
    assert tokenizer.decode(ids) == (
        f"\n<think>{reasoning.REASONING}</think>{reasoning.CONTENT}<|im_end|>"
    )


def test_reasoning_chain_refuses_a_word_of_several_tokens(tokenizer, monkeypatch):
    monkeypatch.setattr(reasoning, "CONTENT_WORDS", ["Parisian"])
    with pytest.raises(ValueError, match=r"'Parisian' is [0-9]+ tokens, not one"):
        reasoning.answer_ids(tokenizer)


def test_reasoning_chain_refuses_a_repeated_token(tokenizer, monkeypatch):
    monkeypatch.setattr(reasoning, "CONTENT_WORDS", ["The"])
    with pytest.raises(ValueError, match="repeats a token"):
        reasoning.answer_ids(tokenizer)
