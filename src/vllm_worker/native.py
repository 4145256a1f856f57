"""Native jobs: RunPod's documented `input`, run on the engine, out as items in RunPod's shape.

Each yielded item is a `NativeItem`, `{"choices": [{"tokens": [...], "finish_reason": ...}, ...],
"usage": {"input": P, "output": C}}`: one choice per sequence, `tokens` holding the text
pieces since the previous item (streaming) or the whole text (not streaming). With
`logprobs`, each choice also carries the log-probabilities of its tokens in that item.

Best-of and beam search only know their winners at the end: a streaming job using them gets
one item then, holding the winners' whole texts.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, NotRequired, TypedDict

from vllm_worker import (
    adapters,
    beam,
    input_bound,
    native_prompt,
    pooling_models,
    sampling,
    vllm_errors,
)
from vllm_worker.batching import BatchPolicy, policy_for
from vllm_worker.coalesce import coalesce
from vllm_worker.config import WorkerSettings
from vllm_worker.errors import JobInputError
from vllm_worker.kinds import JobStats
from vllm_worker.native_input import NativeJob, parse_native
from vllm_worker.serving import Serving, ServingState

if TYPE_CHECKING:
    from vllm import CompletionOutput, RequestOutput
    from vllm.inputs import EngineInput
    from vllm.logprobs import Logprob, PromptLogprobs
    from vllm.lora.request import LoRARequest
    from vllm.v1.engine.async_llm import AsyncLLM


class TokenLogprob(TypedDict):
    """One token and its log-probability (null where it is minus infinity)."""

    token_id: int
    token: str | None
    logprob: float | None


class PositionLogprobs(TokenLogprob):
    """A generated token with the top alternatives vLLM returned for its position."""

    top_logprobs: list[TokenLogprob]


class NativeChoice(TypedDict):
    tokens: list[str]  # text pieces of this item
    finish_reason: str | None  # "stop" or "length" once the sequence ended
    logprobs: NotRequired[list[PositionLogprobs]]  # with `sampling_params.logprobs`


class Usage(TypedDict):
    input: int  # prompt tokens
    output: int  # tokens generated so far, over all sequences


class NativeItem(TypedDict):
    choices: list[NativeChoice]  # one per sequence, by index
    usage: Usage
    # With `sampling_params.prompt_logprobs`, in the first item: one entry per prompt token,
    # null for the first (nothing precedes it), as vLLM gives them.
    prompt_logprobs: NotRequired[list[PositionLogprobs | None]]


#: A generated token id and the log-probabilities vLLM returned for its position (vLLM's
#: type allows None, which sample log-probabilities never are).
Position = tuple[int, "dict[int, Logprob] | None"]


@dataclasses.dataclass(frozen=True)
class NativeRequest:
    """What the engine needs for one native job."""

    prompt: EngineInput  # rendered by vLLM's renderer
    plan: sampling.Plan
    stream: bool
    policy: BatchPolicy
    lora: LoRARequest | None = None  # the adapter the job's `model` names; None: base model


class NativeKind:
    """The job kind of every input that no other kind claims (see `worker.build`)."""

    def __init__(self, serving: Serving, settings: WorkerSettings) -> None:
        self._serving = serving
        self._settings = settings

    def route(self, job_input: object) -> str:
        return "native"

    async def parse(self, job_input: object) -> NativeRequest:
        state = await self._serving.state()
        input_bound.check_job(job_input, state)  # before any costly parsing
        job = parse_native(job_input)
        refused = pooling_models.refusal(job.chat_field, state.tasks)
        if refused is not None:
            raise JobInputError(refused)
        return await build_request(job, state, self._settings)

    async def run(
        self, request: NativeRequest, job_id: str, stats: JobStats
    ) -> AsyncGenerator[NativeItem]:
        state = await self._serving.state()
        request_id = f"{job_id}-{uuid.uuid4().hex[:8]}"
        async with aclosing(generate(state.engine, request, request_id)) as items:
            async for item in items:
                stats.prompt_tokens = item["usage"]["input"]
                stats.output_tokens = item["usage"]["output"]
                stats.finish_reasons = [choice["finish_reason"] for choice in item["choices"]]
                yield item


async def build_request(
    job: NativeJob, state: ServingState, settings: WorkerSettings
) -> NativeRequest:
    """Plan the generation from the sampling parameters, render the prompt with vLLM and
    find the adapter `model` names (loading it first with `LORA_LOAD_ON_DEMAND`)."""
    from vllm.sampling_params import RequestOutputKind

    lora = await adapters.lora_request(state.models, job.model, settings.lora_load_on_demand)
    plan = sampling.parse(job.sampling_params)
    incremental = job.stream and plan.best_of is None and plan.beam is None
    plan.params.output_kind = (
        RequestOutputKind.DELTA if incremental else RequestOutputKind.FINAL_ONLY
    )
    max_tokens = plan.beam.max_tokens if plan.beam else plan.params.max_tokens
    prompt = await native_prompt.render(job, state.renderer, max_tokens or 0)
    return NativeRequest(prompt, plan, incremental, policy_for(job, settings), lora)


async def generate(
    engine: AsyncLLM, request: NativeRequest, request_id: str
) -> AsyncGenerator[NativeItem]:
    """Run one request, yielding output items; closing this generator aborts the request."""
    from vllm.exceptions import VLLMClientError

    plan = request.plan
    items = _Items(plan.n, plan.logprobs, plan.prompt_logprobs)
    try:
        if plan.beam is not None:
            result = await beam.search(
                engine,
                _token_ids(request.prompt),
                plan.beam,
                request_id,
                engine.get_tokenizer(),
                request.lora,
            )
            yield items.final(result)
            return
        outputs = engine.generate(
            request.prompt, plan.params, request_id, lora_request=request.lora
        )
        async with aclosing(outputs):
            if not request.stream:
                async for output in outputs:
                    yield items.final(_best(output, plan.n) if plan.best_of else output)
                return
            async with aclosing(coalesce(outputs, request.policy)) as batches:
                async for batch in batches:
                    yield items.batch(batch)
    except VLLMClientError as error:
        raise JobInputError(_engine_refusal(error)) from None


def _token_ids(prompt: EngineInput) -> list[int]:
    """The prompt's token ids (a text-only model's rendered input always has them)."""
    token_ids = prompt.get("prompt_token_ids")
    if not isinstance(token_ids, list):
        raise JobInputError("prompt: beam search needs a text prompt")
    return token_ids


def _engine_refusal(error: Exception) -> str:
    """The message of a request the engine refused, naming the job field at fault: the
    sampling parameter its check is about, else `sampling_params` for a parameter check, else
    `prompt` (its length, its tokens)."""
    where = "prompt"
    if vllm_errors.from_parameter_checks(error):
        parameter = vllm_errors.parameter_of(error, sampling.SamplingInput.model_fields)
        where = f"sampling_params.{parameter}" if parameter else "sampling_params"
    return f"{where}: {vllm_errors.message_of(error)}"


def _best(output: RequestOutput, n: int) -> beam.SearchResult:
    """The `n` candidates with the highest cumulative log-probability, re-indexed."""
    ranked = sorted(output.outputs, key=_cumulative_logprob, reverse=True)[:n]
    winners = [dataclasses.replace(seq, index=i) for i, seq in enumerate(ranked)]
    return beam.SearchResult(list(output.prompt_token_ids or ()), winners, output.prompt_logprobs)


def _cumulative_logprob(seq: CompletionOutput) -> float:
    # Set whenever log-probabilities were asked for, as best-of always does.
    return seq.cumulative_logprob if seq.cumulative_logprob is not None else -math.inf


class _Items:
    """Native items from a request's outputs: the texts of each batch (or the whole texts),
    with per-sequence totals and finish reasons kept across batches."""

    def __init__(self, n: int, logprobs: bool, prompt_logprobs: bool) -> None:
        self._logprobs = logprobs
        self._prompt_logprobs = prompt_logprobs
        self._total = [0] * n  # tokens generated so far, per sequence
        self._finish: list[str | None] = [None] * n
        self._prompt_tokens = 0

    def batch(self, output: RequestOutput) -> NativeItem:
        """The item of one streamed batch (a merged delta output, see `coalesce`)."""
        n = len(self._total)
        pieces: list[list[str]] = [[] for _ in range(n)]
        probs: list[list[Position]] = [[] for _ in range(n)]
        for seq in output.outputs:
            if seq.text:
                pieces[seq.index].append(seq.text)
            if self._logprobs and seq.logprobs:
                probs[seq.index] = list(zip(seq.token_ids, seq.logprobs, strict=False))
            self._total[seq.index] += len(seq.token_ids)
            self._finish[seq.index] = seq.finish_reason
        return self._item(output, pieces, probs)

    def final(self, output: RequestOutput | beam.SearchResult) -> NativeItem:
        """The single item of a job that is not streamed token by token."""
        outputs = sorted(output.outputs, key=lambda s: s.index)
        for seq in outputs:
            self._total[seq.index] = len(seq.token_ids)
            self._finish[seq.index] = seq.finish_reason
        probs = [list(zip(s.token_ids, s.logprobs or (), strict=False)) for s in outputs]
        return self._item(output, [[seq.text] for seq in outputs], probs)

    def _item(
        self,
        output: RequestOutput | beam.SearchResult,
        pieces: list[list[str]],
        probs: list[list[Position]],
    ) -> NativeItem:
        self._prompt_tokens = len(output.prompt_token_ids or ()) or self._prompt_tokens
        choices = []
        for tokens, finish, positions in zip(pieces, self._finish, probs, strict=True):
            choice: NativeChoice = {"tokens": tokens, "finish_reason": finish}
            if self._logprobs:
                choice["logprobs"] = [
                    _position(token, top) for token, top in positions if top is not None
                ]
            choices.append(choice)
        usage: Usage = {"input": self._prompt_tokens, "output": sum(self._total)}
        item: NativeItem = {"choices": choices, "usage": usage}
        if self._prompt_logprobs and output.prompt_logprobs:  # only the first output has them
            item["prompt_logprobs"] = _prompt_positions(
                output.prompt_token_ids, output.prompt_logprobs
            )
        return item


def _prompt_positions(
    token_ids: list[int] | None, logprobs: PromptLogprobs
) -> list[PositionLogprobs | None]:
    """Each prompt token's log-probability and top alternatives (None for the first)."""
    return [
        None if top is None else _position(token_id, top)
        for token_id, top in zip(token_ids or (), logprobs, strict=False)
    ]


def _position(token_id: int, top: dict[int, Logprob]) -> PositionLogprobs:
    """One generated token's log-probability and the top alternatives vLLM returned."""
    chosen = top[token_id]
    return {
        "token_id": token_id,
        "token": chosen.decoded_token,
        "logprob": _finite(chosen.logprob),
        "top_logprobs": [
            {"token_id": tid, "token": lp.decoded_token, "logprob": _finite(lp.logprob)}
            for tid, lp in sorted(top.items(), key=lambda item: item[1].rank or 0)
        ],
    }


def _finite(logprob: float) -> float | None:
    """JSON has no -Infinity: an impossible token's log-probability becomes null."""
    return logprob if math.isfinite(logprob) else None
