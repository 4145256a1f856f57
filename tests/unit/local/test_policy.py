"""A request's policy: RunPod's limits on executionTimeout and ttl."""

import pytest

from vllm_worker.local.policy import Policy, PolicyError, parse_policy

DAY_MS = 24 * 3600 * 1000
WEEK = 7 * DAY_MS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Policy()),
        ({}, Policy()),
        ({"executionTimeout": 5000, "ttl": 10_000}, Policy(executionTimeout=5000, ttl=10_000)),
        ({"executionTimeout": WEEK, "ttl": WEEK}, Policy(executionTimeout=WEEK, ttl=WEEK)),
        ({"ttl": 60_000, "lowPriority": True}, Policy(ttl=60_000)),
    ],
)
def test_policies_within_runpods_limits_are_taken(raw, expected):
    assert parse_policy(raw) == expected


MS = "must be a whole number of milliseconds from"
TTL_RANGE = f"policy.ttl: {MS} 10000 (10 s) to 604800000 (7 days)"
TIMEOUT_RANGE = f"policy.executionTimeout: {MS} 5000 (5 s) to 604800000 (7 days)"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"ttl": 5}, f"{TTL_RANGE} (got 5)"),
        ({"ttl": "abc"}, f"{TTL_RANGE} (got 'abc')"),
        ({"ttl": 8 * DAY_MS}, f"{TTL_RANGE} (got 691200000)"),
        ({"ttl": 9999}, f"{TTL_RANGE} (got 9999)"),
        ({"ttl": 20_000.0}, f"{TTL_RANGE} (got 20000.0)"),
        ({"ttl": True}, f"{TTL_RANGE} (got True)"),
        ({"executionTimeout": 4999}, f"{TIMEOUT_RANGE} (got 4999)"),
        ({"executionTimeout": "abc"}, f"{TIMEOUT_RANGE} (got 'abc')"),
        ({"executionTimeout": 7 * DAY_MS + 1}, f"{TIMEOUT_RANGE} (got 604800001)"),
        ({"executionTimeout": 5, "ttl": 5}, f"{TIMEOUT_RANGE} (got 5); {TTL_RANGE} (got 5)"),
        ([1], "policy: must be an object (got list)"),
    ],
)
def test_policies_outside_runpods_limits_are_refused_naming_the_field(raw, message):
    with pytest.raises(PolicyError) as refused:
        parse_policy(raw)
    assert str(refused.value) == message
