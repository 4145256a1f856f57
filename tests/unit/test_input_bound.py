"""The input bound: one pass over a job's JSON, refusing what no model context could take."""

import time

import pytest

from vllm_worker.input_bound import InputBound, InputTooLarge, longest_token_chars

BOUND = InputBound(max_model_len=100, vocab_size=500, longest_token_chars=10)


def refusal(value: object) -> str:
    with pytest.raises(InputTooLarge) as refused:
        BOUND.check(value)
    return str(refused.value)


def test_inputs_a_model_could_take_pass():
    BOUND.check({"messages": [{"role": "user", "content": "x" * 180}] * 5})  # 975 characters
    BOUND.check({"prompt": list(range(100)), "allowed_token_ids": list(range(500))})
    BOUND.check({"sampling_params": {"logit_bias": {str(i): 1 for i in range(500)}}})
    BOUND.check([None, 1, 2.5, True, "text"])


def test_a_list_longer_than_the_context_is_refused_naming_the_field():
    content = [1] * 101
    assert refusal({"messages": [{"role": "user", "content": content}]}) == (
        "messages.0.content: 101 elements, more than the 100 this model could take "
        "(its context is 100 tokens)"
    )
    assert refusal({"sampling_params": {"allowed_token_ids": [1] * 501}}).startswith(
        "sampling_params.allowed_token_ids: 501 elements, more than the 500"
    )
    assert refusal({f"k{i}": 0 for i in range(101)}).startswith("input: 101 elements")


def test_too_many_elements_in_all_are_refused_where_the_count_ran_out():
    message = {"role": "user", "content": [{"type": "text", "text": "a"}] * 50}
    # 60 messages, 2 members, 50 parts with 2 members each: far more than 4 x 100 elements.
    wordy = InputBound(max_model_len=100, vocab_size=500, longest_token_chars=1000)
    with pytest.raises(InputTooLarge) as refused:
        wordy.check({"messages": [message] * 60})
    message_of = str(refused.value)
    assert message_of.endswith(
        "the input holds more than 400 list and object elements in all, more than this "
        "model's context of 100 tokens could take"
    )
    assert message_of.startswith("messages.")


def test_token_id_sets_do_not_count_towards_the_total():
    BOUND.check(
        {
            "prompt": list(range(100)),
            "allowed_token_ids": list(range(500)),
            "stop_token_ids": list(range(500)),
            "logit_bias": {str(i): 0 for i in range(500)},
        }
    )


def test_text_longer_than_the_context_could_hold_is_refused():
    message = refusal({"prompt": "x" * 600, "messages": [{"role": "user", "content": "y" * 401}]})
    assert message == (
        "messages.0.content: the input holds more than 1,000 characters of text, more than "
        "this model's context of 100 tokens could take (no token is longer than 10 characters)"
    ) or message.startswith("prompt: the input holds more than 1,000 characters")
    assert refusal({"k" * 1001: 1}).startswith("input: the input holds more than 1,000 characters")


def test_a_hostile_list_is_refused_at_once():
    bound = InputBound(max_model_len=8192, vocab_size=49152, longest_token_chars=64)
    hostile = {"messages": [{"role": "user", "content": list(range(400_000))}]}
    started = time.perf_counter()
    with pytest.raises(InputTooLarge) as refused:
        bound.check(hostile)
    assert time.perf_counter() - started < 0.01
    assert refused.value.field == "messages.0.content"


def test_the_longest_token_counts_characters_of_the_vocabulary():
    class Tokenizer:
        def get_vocab(self) -> dict[str, int]:
            return {"a": 0, "ĠĠĠĠ": 1, "<|im_start|>": 2}

    assert longest_token_chars(Tokenizer()) == 12  # type: ignore[arg-type]
