"""Validation of native job input, without the engine."""

import pytest

from vllm_worker.batching import policy_for
from vllm_worker.config import WorkerSettings
from vllm_worker.errors import JobInputError
from vllm_worker.native_input import parse_native


def test_prompt_job_uses_environment_batch_defaults():
    job = parse_native({"prompt": "Hi"})
    policy = policy_for(job, WorkerSettings(default_batch_size=40, default_min_batch_size=2))
    assert (policy.min_size, policy.max_size, policy.growth) == (2, 40, 3.0)
    assert job.chat() is None


def test_per_job_batch_values_override_the_environment():
    job = parse_native(
        {"prompt": "Hi", "max_batch_size": 8, "min_batch_size": 2, "batch_size_growth_factor": 2}
    )
    policy = policy_for(job, WorkerSettings())
    assert (policy.min_size, policy.max_size, policy.growth) == (2, 8, 2.0)


def test_messages_win_over_prompt():
    job = parse_native({"prompt": "ignored", "messages": [{"role": "user", "content": "Hi"}]})
    assert job.chat() == [{"role": "user", "content": "Hi"}]


def test_apply_chat_template_wraps_prompt_as_user_message():
    job = parse_native({"prompt": "Hi", "apply_chat_template": True})
    assert job.chat() == [{"role": "user", "content": "Hi"}]


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({}, "input: give `prompt`"),
        ({"prompt": 42}, "prompt"),
        ({"prompt": None, "messages": None}, "input: give `prompt`"),
        ({"prompt": "Hi", "chat_template_kwargs": []}, "chat_template_kwargs"),
        ({"prompt": "Hi", "tools": {}}, "tools"),
        ({"messages": []}, "messages"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"content": "Hi"}]}, "messages.0.role"),
        ({"messages": [{"role": "", "content": "Hi"}]}, "messages.0.role"),
        ({"prompt": "Hi", "stream": "yes"}, "stream"),
        ({"prompt": "Hi", "apply_chat_template": 1}, "apply_chat_template"),
        ({"prompt": "Hi", "sampling_params": []}, "sampling_params"),
        ({"prompt": "Hi", "max_batch_size": 0}, "max_batch_size"),
        ({"prompt": "Hi", "min_batch_size": "3"}, "min_batch_size"),
        ({"prompt": "Hi", "batch_size_growth_factor": 0.5}, "batch_size_growth_factor"),
        ({"prompt": "Hi", "sampling_param": {}}, "sampling_param"),
    ],
)
def test_bad_input_names_the_field(job_input, expected):
    with pytest.raises(JobInputError) as caught:
        parse_native(job_input)
    assert str(caught.value).startswith(expected), str(caught.value)


def test_unknown_field_lists_accepted_fields():
    with pytest.raises(JobInputError, match="Accepted: prompt, messages"):
        parse_native({"prompt": "Hi", "promt": "typo"})


@pytest.mark.parametrize("job_input", [None, "a prompt", [1, 2]])
def test_input_must_be_an_object(job_input):
    with pytest.raises(JobInputError, match="input: must be an object"):
        parse_native(job_input)


def test_null_means_not_given():
    job = parse_native(
        {"prompt": "Hi", "sampling_params": None, "stream": None, "max_batch_size": None}
    )
    assert (job.sampling_params, job.stream, job.max_batch_size) == ({}, False, None)


def test_message_keys_beyond_role_reach_the_renderer_as_sent():
    turn = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}], "name": "bot"}
    job = parse_native({"messages": [turn]})
    assert job.chat() == [turn]
    assert job.chat_field == "messages"
