"""How many candidates each beam asks the engine for."""

import pytest

from vllm_worker.beam import candidates_per_beam


@pytest.mark.parametrize(
    ("width", "max_logprobs", "expected"),
    [(3, 20, 6), (10, 20, 20), (11, 20, 20), (40, 20, 20), (11, -1, 22), (1, 0, 1)],
)
def test_twice_the_width_capped_at_what_the_engine_returns(width, max_logprobs, expected):
    assert candidates_per_beam(width, max_logprobs) == expected
