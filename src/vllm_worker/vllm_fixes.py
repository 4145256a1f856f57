"""Fixes for vLLM bugs that the worker's batched streams expose, applied before vLLM's OpenAI
app is built.

Each fix names the upstream issue. Its test (tests/unit/test_vllm_fixes.py) first shows the bug
in vLLM's own code, so it fails once vLLM fixes it and the fix here can go.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


def apply() -> None:
    """Install every fix; calling it again changes nothing."""
    _keep_the_start_marker_out_of_streamed_reasoning()


def _keep_the_start_marker_out_of_streamed_reasoning() -> None:
    """vLLM issue #55195 (open in 0.32): for a streamed delta that holds the start marker and
    reasoning text but no end marker, `BaseThinkingReasoningParser.extract_reasoning_streaming`
    returns the whole delta as reasoning, marker included (`<think>The capital` -> reasoning
    `<think>The capital`), where the parser of a whole answer gives `The capital`. A delta holds
    several tokens whenever a job's batch policy asks for it, or vLLM merges outputs under load.
    The fix drops the marker and what precedes it from that reasoning (the parsers derived from
    this class, deepseek_r1 among them, call it through `super()`)."""
    from vllm.reasoning.basic_parsers import BaseThinkingReasoningParser

    original = BaseThinkingReasoningParser.extract_reasoning_streaming
    if getattr(original, "worker_fix", False):
        return

    @functools.wraps(original)
    def extract(
        self: BaseThinkingReasoningParser,
        previous_text: str,
        current_text: str,
        delta_text: str,
        previous_token_ids: Sequence[int],
        current_token_ids: Sequence[int],
        delta_token_ids: Sequence[int],
    ) -> Any:
        message = original(
            self,
            previous_text,
            current_text,
            delta_text,
            previous_token_ids,
            current_token_ids,
            delta_token_ids,
        )
        opens_here = (
            self.start_token_id in delta_token_ids
            and self.start_token_id not in previous_token_ids
            and self.end_token_id not in delta_token_ids
        )
        if message is None or not opens_here or not message.reasoning:
            return message
        at = message.reasoning.find(self.start_token)
        if at < 0:
            return message
        message.reasoning = message.reasoning[at + len(self.start_token) :] or None
        return message if message.reasoning or message.content else None

    extract.worker_fix = True  # type: ignore[attr-defined]
    BaseThinkingReasoningParser.extract_reasoning_streaming = extract
