from itertools import islice

import pytest
from pydantic import ValidationError

from vllm_worker.batching import BatchPolicy


def first(policy: BatchPolicy, count: int) -> list[int]:
    return list(islice(policy.sizes(), count))


def test_default_policy_grows_by_three_up_to_fifty():
    assert first(BatchPolicy(min_size=1, max_size=50, growth=3), 7) == [1, 3, 9, 27, 50, 50, 50]


def test_fractional_growth_rounds_sizes_up():
    assert first(BatchPolicy(min_size=1, max_size=10, growth=1.5), 7) == [1, 2, 3, 4, 6, 8, 10]


def test_growth_one_keeps_size_constant():
    assert first(BatchPolicy(min_size=4, max_size=50, growth=1), 3) == [4, 4, 4]


def test_min_above_max_is_capped():
    assert first(BatchPolicy(min_size=80, max_size=50, growth=3), 2) == [50, 50]


@pytest.mark.parametrize(
    "fields", [{"min_size": 0}, {"max_size": 0}, {"growth": 0.5}, {"min_size": "2"}]
)
def test_invalid_policy_is_rejected(fields):
    with pytest.raises(ValidationError):
        BatchPolicy.model_validate({"min_size": 1, "max_size": 50, "growth": 3, **fields})
