"""Beam search with the documented `length_penalty` and `early_stopping`.

vLLM 0.32 keeps beam search only in its OpenAI layer (`BeamSearchOnlineMixin`), with no early
stopping. This is the same search, step for step: each beam is extended by one engine request
asking for the top `2 * width` log-probabilities (capped at what the engine returns), beams
are ranked with vLLM's own sequence type and scoring function, and finished beams are kept
aside. On top of it, `early_stopping` ends the
search as its documentation says. Cancelling the caller cancels the in-flight step requests,
which aborts them in the engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vllm_worker.sampling import BeamSearch

if TYPE_CHECKING:
    from vllm import CompletionOutput, RequestOutput, SamplingParams
    from vllm.engine.protocol import EngineClient
    from vllm.entrypoints.generate.beam_search.utils import BeamSearchSequence
    from vllm.inputs import EngineInput
    from vllm.logprobs import PromptLogprobs
    from vllm.lora.request import LoRARequest
    from vllm.tokenizers import TokenizerLike


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The final output of a search, shaped like the parts of vLLM's `RequestOutput` we use."""

    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]  # best first
    prompt_logprobs: PromptLogprobs | None = None


async def search(
    engine: EngineClient,
    prompt_token_ids: list[int],
    spec: BeamSearch,
    request_id: str,
    tokenizer: TokenizerLike,
    lora: LoRARequest | None = None,
) -> SearchResult:
    from vllm import CompletionOutput, SamplingParams
    from vllm.entrypoints.generate.beam_search.utils import (
        BeamSearchSequence,
        create_sort_beams_key_function,
    )
    from vllm.inputs import tokens_input

    eos = tokenizer.eos_token_id
    rank = create_sort_beams_key_function(eos, spec.length_penalty)
    step = SamplingParams(
        logprobs=candidates_per_beam(spec.width, engine.model_config.max_logprobs),
        max_tokens=1,
        temperature=0,
        detokenize=False,
    )
    prompt = tokens_input(prompt_token_ids)
    beams = [BeamSearchSequence(orig_prompt=prompt, tokens=list(prompt_token_ids), logprobs=[])]
    finished: list[BeamSearchSequence] = []

    for position in range(spec.max_tokens):
        outputs = await asyncio.gather(
            *(
                _one_step(engine, beam.get_prompt(), step, f"{request_id}-{position}-{i}", lora)
                for i, beam in enumerate(beams)
            )
        )
        candidates = []
        for beam, output in zip(beams, outputs, strict=True):
            logprobs = output.outputs[0].logprobs
            if logprobs is None:  # `step` asks for them
                raise RuntimeError(f"the engine returned no log-probabilities for {request_id}")
            top = logprobs[0]
            for token_id, logprob in top.items():
                extended = BeamSearchSequence(
                    orig_prompt=prompt,
                    tokens=[*beam.tokens, token_id],
                    logprobs=[*beam.logprobs, top],
                    cum_logprob=beam.cum_logprob + logprob.logprob,
                )
                if token_id == eos and not spec.ignore_eos:
                    extended.finish_reason, extended.stop_reason = "stop", eos
                    finished.append(extended)
                else:
                    candidates.append(extended)
        beams = sorted(candidates, key=lambda b: b.cum_logprob, reverse=True)[: spec.width]
        if not beams or _done(spec, finished, beams, len(prompt_token_ids), rank, eos):
            break

    best = sorted([*finished, *beams], key=rank, reverse=True)[: spec.n]
    choices = []
    for index, beam in enumerate(best):
        generated = beam.tokens[len(prompt_token_ids) :]
        shown = (
            generated[:-1]
            if beam.finish_reason == "stop" and not spec.include_stop_str_in_output
            else generated
        )
        choices.append(
            CompletionOutput(
                index=index,
                text=tokenizer.decode(shown, skip_special_tokens=spec.skip_special_tokens),
                token_ids=generated,
                cumulative_logprob=beam.cum_logprob,
                logprobs=None,
                finish_reason=beam.finish_reason or "length",
                stop_reason=beam.stop_reason,
            )
        )
    return SearchResult(prompt_token_ids=list(prompt_token_ids), outputs=choices)


def candidates_per_beam(width: int, max_logprobs: int) -> int:
    """Top tokens each beam is extended by: `2 * width`, as vLLM's search asks, but no more
    than the engine returns (`MAX_LOGPROBS`, 20 by default; -1 means no limit). From the
    second step on, `width` beams still offer at least `width` candidates."""
    return 2 * width if max_logprobs < 0 else max(1, min(2 * width, max_logprobs))


async def _one_step(
    engine: EngineClient,
    prompt: EngineInput,
    params: SamplingParams,
    request_id: str,
    lora: LoRARequest | None,
) -> RequestOutput:
    final = None
    async for output in engine.generate(prompt, params, request_id, lora_request=lora):
        final = output
    if final is None:
        raise RuntimeError(f"the engine returned no output for request {request_id}")
    return final


def _done(
    spec: BeamSearch,
    finished: Sequence[BeamSearchSequence],
    running: Sequence[BeamSearchSequence],
    prompt_len: int,
    rank: Callable[[BeamSearchSequence], float],
    eos: int,
) -> bool:
    """Whether the search may stop now, by the documented meaning of `early_stopping`."""
    from vllm.entrypoints.generate.beam_search.utils import get_beam_search_score

    if len(finished) < spec.width:
        return False
    if spec.early_stopping is True:
        return True
    worst_kept = sorted(finished, key=rank, reverse=True)[spec.width - 1]
    best_running = running[0]  # sorted by cumulative log-probability
    length = len(best_running.tokens)
    if spec.early_stopping == "never" and spec.length_penalty > 0:
        # The best a running beam could still reach: its log-probability spread over the
        # longest length it may grow to.
        length = prompt_len + spec.max_tokens
    attainable = best_running.cum_logprob / (length**spec.length_penalty)
    worst_score = get_beam_search_score(
        worst_kept.tokens, worst_kept.cum_logprob, eos, spec.length_penalty
    )
    return worst_score >= attainable
