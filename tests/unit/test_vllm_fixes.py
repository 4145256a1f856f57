"""The fixes of `vllm_fixes` on vLLM's real reasoning parser and a tokenizer with `<think>`
tokens: the bug is still in vLLM's code, and with the fix a stream split anywhere parses as the
whole answer does."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.models import reasoning
from vllm_worker import vllm_fixes


@pytest.fixture(scope="module")
def parser():
    from vllm.reasoning.deepseek_r1_reasoning_parser import DeepSeekR1ReasoningParser

    vllm_fixes.apply()
    return DeepSeekR1ReasoningParser(reasoning._tokenizer())


def answer(parser) -> list[int]:
    return reasoning.answer_ids(parser.model_tokenizer)[1:-1]  # <think> ... Paris.


def streamed(parser, ids: list[int], cuts: list[int], extract) -> tuple[str, str]:
    """Reasoning and content of `ids` streamed in deltas split at `cuts`."""
    tokenizer = parser.model_tokenizer
    bounds = [0, *sorted(set(cuts)), len(ids)]
    reasoning_text = content = previous_text = ""
    for start, end in itertools.pairwise(bounds):
        if start == end:
            continue
        delta_text = tokenizer.decode(ids[start:end])
        message = extract(
            parser,
            previous_text,
            previous_text + delta_text,
            delta_text,
            ids[:start],
            ids[:end],
            ids[start:end],
        )
        previous_text += delta_text
        if message is not None:
            reasoning_text += message.reasoning or ""
            content += message.content or ""
    return reasoning_text, content


def test_vllm_still_streams_the_start_marker_as_reasoning(parser):
    """When this fails, vLLM fixed #55195: remove the fix from `vllm_fixes`."""
    from vllm.reasoning.basic_parsers import BaseThinkingReasoningParser

    unfixed = BaseThinkingReasoningParser.extract_reasoning_streaming.__wrapped__
    ids = answer(parser)
    assert streamed(parser, ids, [3], unfixed)[0].startswith("<think>")


@given(cuts=st.lists(st.integers(min_value=1, max_value=7), max_size=6))
def test_any_split_of_a_stream_parses_as_the_whole_answer(parser, cuts):
    from vllm.reasoning.basic_parsers import BaseThinkingReasoningParser

    ids = answer(parser)
    whole = parser.extract_reasoning(parser.model_tokenizer.decode(ids), request=None)
    fixed = BaseThinkingReasoningParser.extract_reasoning_streaming
    assert streamed(parser, ids, cuts, fixed) == whole == (reasoning.REASONING, reasoning.CONTENT)


def test_applying_twice_wraps_once():
    from vllm.reasoning.basic_parsers import BaseThinkingReasoningParser

    vllm_fixes.apply()
    once = BaseThinkingReasoningParser.extract_reasoning_streaming
    vllm_fixes.apply()
    assert BaseThinkingReasoningParser.extract_reasoning_streaming is once
    assert not getattr(once.__wrapped__, "worker_fix", False)
