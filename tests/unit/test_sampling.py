"""The sampling table, its validation and its mapping onto vLLM, without the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vllm_worker import sampling
from vllm_worker.errors import JobInputError
from vllm_worker.sampling import NOT_OFFERED, SamplingInput

README = Path(__file__).parents[2] / "README.md"


def test_documented_defaults():
    plan = sampling.parse({})
    params = plan.params
    assert (params.n, params.max_tokens, params.temperature, params.top_p) == (1, 16, 1.0, 1.0)
    assert params.top_k == 0  # RunPod's -1 ("no limit") is vLLM's 0
    assert (plan.best_of, plan.beam, plan.logprobs) == (None, None, False)
    documented = {
        "n": 1, "best_of": None, "presence_penalty": 0.0, "frequency_penalty": 0.0,
        "repetition_penalty": 1.0, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "min_p": 0.0,
        "use_beam_search": False, "length_penalty": 1.0, "early_stopping": False, "stop": None,
        "stop_token_ids": None, "ignore_eos": False, "max_tokens": 16,
        "skip_special_tokens": True, "spaces_between_special_tokens": True,
    }  # fmt: skip
    defaults = SamplingInput()
    assert {name: getattr(defaults, name) for name in documented} == documented


def test_every_vllm_sampling_field_is_offered_or_deliberately_not():
    from vllm import SamplingParams

    public = {f for f in SamplingParams.__struct_fields__ if not f.startswith("_")}
    offered = set(SamplingInput.model_fields)
    assert public - NOT_OFFERED <= offered
    assert public >= NOT_OFFERED


def test_values_reach_vllm():
    params = sampling.parse(
        {"temperature": 0.3, "max_tokens": 100, "stop": ["\n"], "seed": 7, "logit_bias": {"5": 1}}
    ).params
    assert (params.temperature, params.max_tokens, params.stop, params.seed) == (
        0.3,
        100,
        ["\n"],
        7,
    )
    assert params.logit_bias == {5: 1.0}


def test_best_of_plans_more_candidates_ranked_by_logprob():
    plan = sampling.parse({"n": 2, "best_of": 5})
    assert (plan.n, plan.best_of, plan.params.n, plan.params.logprobs) == (2, 5, 5, 0)
    assert sampling.parse({"n": 2, "best_of": 2}).best_of is None


def test_beam_search_plan():
    plan = sampling.parse(
        {"use_beam_search": True, "temperature": 0, "n": 2, "best_of": 4, "early_stopping": "never"}
    )
    assert plan.beam.width == 4 and plan.beam.n == 2 and plan.beam.early_stopping == "never"
    assert plan.params.n == 1 and plan.best_of is None


def test_two_structured_output_constraints_are_rejected():
    with pytest.raises(JobInputError, match="structured_outputs"):
        sampling.parse({"guided_regex": "[0-9]+", "guided_choice": ["a", "b"]})


@pytest.mark.parametrize(
    ("raw", "key", "value"),
    [
        ({"guided_json": {"type": "object"}}, "json", {"type": "object"}),
        ({"guided_regex": "[0-9]+"}, "regex", "[0-9]+"),
        ({"guided_choice": ["a", "b"]}, "choice", ["a", "b"]),
        ({"guided_grammar": "root ::= 'a'"}, "grammar", "root ::= 'a'"),
    ],
)
def test_each_legacy_guided_name(raw, key, value):
    assert getattr(sampling.parse(raw).params.structured_outputs, key) == value


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
        ({"early_stopping": "sometimes"}, "sampling_params.early_stopping"),
        ({"stop_token_ids": [-1]}, "sampling_params.stop_token_ids.0"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(JobInputError) as caught:
        sampling.parse(raw)
    assert str(caught.value).startswith(field), str(caught.value)


def test_bad_values_show_value_and_range():
    with pytest.raises(JobInputError) as caught:
        sampling.parse({"top_p": 1.5})
    assert str(caught.value) == (
        "sampling_params.top_p: Input should be less than or equal to 1 (got 1.5)"
    )


def test_unknown_key_lists_accepted_keys():
    with pytest.raises(JobInputError, match=r"sampling_params.foo: unknown field\. Accepted: n,"):
        sampling.parse({"foo": 1})


def test_bad_structured_output_is_reported():
    with pytest.raises(JobInputError, match=r"sampling_params\.structured_outputs"):
        sampling.parse({"structured_outputs": {"nonsense": 1}})


def test_readme_sampling_table_is_generated_from_the_model():
    assert sampling.markdown_table() in README.read_text()


# --- property-based: the validator accepts what is valid and explains what is not ----------

VALID = {
    "n": st.integers(1, 4),
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "repetition_penalty": st.floats(0.01, 5),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "top_k": st.integers(-1, 100),
    "min_p": st.floats(0, 1),
    "stop": st.one_of(
        st.none(),
        st.text(min_size=1, max_size=5),
        st.lists(st.text(min_size=1, max_size=5), max_size=3),
    ),
    "stop_token_ids": st.one_of(st.none(), st.lists(st.integers(0, 1000), max_size=3)),
    "ignore_eos": st.booleans(),
    "max_tokens": st.integers(1, 4096),
    "skip_special_tokens": st.booleans(),
    "spaces_between_special_tokens": st.booleans(),
    "seed": st.one_of(st.none(), st.integers(0, 2**31)),
    "logprobs": st.one_of(st.none(), st.integers(0, 5)),
}

ANYTHING = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.fixed_dictionaries({}, optional=VALID).filter(
        lambda raw: raw.get("n", 1) == 1 or raw.get("temperature", 1.0) > 0
    )
)
def test_valid_parameter_sets_are_accepted(raw):
    plan = sampling.parse(raw)
    assert plan.params.max_tokens == raw.get("max_tokens", 16)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*SamplingInput.model_fields, "bogus", "guided_json"]), ANYTHING, max_size=4
    )
)
def test_random_parameter_sets_are_accepted_or_explained(raw):
    try:
        sampling.parse(raw)
    except JobInputError as error:
        message = str(error)
        assert message.startswith("sampling_params"), message
        assert "Traceback" not in message and "\n" not in message


def test_vllm_constructor_checks_name_the_field():
    with pytest.raises(JobInputError) as caught:
        sampling.parse({"stop": ["", "x"]})
    assert str(caught.value) == "sampling_params.stop: stop cannot contain an empty string."


def test_nulls_mean_not_given_at_every_depth():
    plan = sampling.parse(
        {
            "max_tokens": None,
            "temperature": None,
            "structured_outputs": {"choice": ["a"], "regex": None},
        }
    )
    assert (plan.params.max_tokens, plan.params.temperature) == (16, 1.0)
    assert plan.params.structured_outputs.choice == ["a"]
    assert plan.params.structured_outputs.regex is None


def test_logprob_token_ids_alone_ask_for_logprobs():
    assert sampling.parse({"logprob_token_ids": [1, 2]}).logprobs
    assert sampling.parse({"prompt_logprobs": 0}).prompt_logprobs
