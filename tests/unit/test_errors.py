"""One-line validation messages, including for vLLM's union-typed chat messages."""

import pytest
from pydantic import BaseModel, ValidationError

from vllm_worker.errors import MAX_PROBLEMS, describe


def problems_of(model, raw):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(raw)
    return describe(caught.value)


@pytest.fixture(scope="module")
def chat_request():
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

    return ChatCompletionRequest


def test_a_message_is_judged_by_the_shape_its_role_chose(chat_request):
    message = problems_of(chat_request, {"messages": [{"role": "user", "content": 3}]})
    assert message == (
        "messages.0.content: Input should be a valid string or Input should be iterable (got 3)"
    )


def test_a_tool_call_missing_its_parts_names_them(chat_request):
    call = {"id": "c1", "function": {"name": "f"}}
    turn = {"role": "assistant", "content": None, "tool_calls": [call]}
    message = problems_of(chat_request, {"messages": [turn]})
    assert "function.arguments: Field required" in message
    assert "custom" not in message  # the other tool-call shape is not the one chosen


def test_a_literal_no_alternative_accepts_is_the_problem():
    from typing import Literal

    class Cat(BaseModel):
        kind: Literal["cat"]
        lives: int

    class Dog(BaseModel):
        kind: Literal["dog"]
        bark: str

    class Pet(BaseModel):
        pet: Cat | Dog

    message = problems_of(Pet, {"pet": {"kind": "cow"}})
    assert message == "pet.kind: Input should be 'cat' or Input should be 'dog' (got 'cow')"


def test_many_problems_are_capped():
    class Many(BaseModel):
        values: list[int]

    message = problems_of(Many, {"values": ["x"] * 400})
    assert message.count("Input should be a valid integer") == MAX_PROBLEMS
    assert message.endswith(f"and {400 - MAX_PROBLEMS} more problems")
