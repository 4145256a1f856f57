"""Validation of `sampling_params` and the mapping onto vLLM's `SamplingParams`."""

import pytest

from vllm_worker import sampling
from vllm_worker.errors import JobInputError


def test_documented_defaults():
    params = sampling.parse({})
    assert (params.n, params.max_tokens, params.temperature, params.top_p) == (1, 16, 1.0, 1.0)
    assert params.top_k == 0  # RunPod's -1 ("no limit") is vLLM's 0


def test_values_reach_vllm():
    params = sampling.parse(
        {"temperature": 0.3, "max_tokens": 100, "stop": ["\n"], "seed": 7, "logit_bias": {"5": 1}}
    )
    assert (params.temperature, params.max_tokens, params.stop, params.seed) == (
        0.3,
        100,
        ["\n"],
        7,
    )
    assert params.logit_bias == {5: 1.0}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"max_tokens": "abc"}, "sampling_params.max_tokens"),
        ({"max_tokens": -1}, "sampling_params.max_tokens"),
        ({"top_p": 1.5}, "sampling_params.top_p"),
        ({"top_p": 0}, "sampling_params.top_p"),
        ({"n": 0}, "sampling_params.n"),
        ({"temperature": -0.1}, "sampling_params.temperature"),
        ({"stop": [1, 2]}, "sampling_params.stop"),
        ({"best_of": 1, "n": 2}, "sampling_params"),
        ({"temperature": True}, "sampling_params.temperature"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(JobInputError) as caught:
        sampling.parse(raw)
    assert str(caught.value).startswith(field), str(caught.value)


def test_unknown_key_lists_accepted_keys():
    with pytest.raises(JobInputError, match=r"sampling_params.foo: unknown field\. Accepted: n,"):
        sampling.parse({"foo": 1})


def test_bad_structured_output_is_reported():
    with pytest.raises(JobInputError, match=r"sampling_params\.structured_outputs"):
        sampling.parse({"structured_outputs": {"nonsense": 1}})
