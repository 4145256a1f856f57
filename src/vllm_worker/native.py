"""Native jobs: a validated request through the engine, out as items in RunPod's shape.

Each yielded item is `{"choices": [{"tokens": [...], "finish_reason": ...}, ...],
"usage": {"input": P, "output": C}}`: one choice per sequence, `tokens` holding the text
pieces since the previous item (streaming) or the whole text (not streaming).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from vllm_worker import sampling
from vllm_worker.batching import BatchPolicy
from vllm_worker.config import WorkerSettings
from vllm_worker.errors import JobInputError
from vllm_worker.jobs import NativeJob


@dataclasses.dataclass(frozen=True)
class NativeRequest:
    """What the engine needs for one native job."""

    prompt: dict[str, Any]  # a vLLM text or tokens prompt
    params: Any  # vllm.SamplingParams
    stream: bool
    policy: BatchPolicy


def build_request(job: NativeJob, tokenizer, settings: WorkerSettings) -> NativeRequest:
    """Template the chat (if any) and check the sampling parameters."""
    from vllm.sampling_params import RequestOutputKind

    params = sampling.parse(job.sampling_params)
    params.output_kind = RequestOutputKind.DELTA if job.stream else RequestOutputKind.FINAL_ONLY
    chat = job.chat()
    if chat is None:
        prompt: dict[str, Any] = {"prompt": job.prompt}
    else:
        field = "messages" if job.messages is not None else "prompt"
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # templates are user-facing Jinja: any failure is input's
            raise JobInputError(f"{field}: the chat template failed: {error}") from None
        # The template already holds BOS and friends: do not add them twice.
        prompt = {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}
    return NativeRequest(prompt, params, job.stream, job.policy(settings))


async def generate(engine, request: NativeRequest, request_id: str) -> AsyncIterator[dict]:
    """Run one request, yielding output items; closing this generator aborts the request."""
    from vllm.exceptions import VLLMClientError

    outputs = engine.generate(request.prompt, request.params, request_id)
    batches = _Batches(request.params.n, request.policy)
    async with aclosing(outputs):
        try:
            async for output in outputs:
                if not request.stream:
                    yield batches.final(output)
                elif batches.add(output):
                    yield batches.flush()
        except VLLMClientError as error:
            raise JobInputError(f"prompt: {error}") from None


class _Batches:
    """Collects delta outputs per sequence and tells when a batch is full."""

    def __init__(self, n: int, policy: BatchPolicy) -> None:
        self._sizes = policy.sizes()
        self._target = next(self._sizes)
        self._pieces: list[list[str]] = [[] for _ in range(n)]
        self._new = [0] * n  # tokens since the last flush, per sequence
        self._total = [0] * n
        self._finish: list[str | None] = [None] * n
        self._prompt_tokens = 0

    def add(self, output) -> bool:
        """Take one delta output; True when a batch should be sent now."""
        self._prompt_tokens = len(output.prompt_token_ids or ())
        for seq in output.outputs:
            if seq.text:
                self._pieces[seq.index].append(seq.text)
            self._new[seq.index] += len(seq.token_ids)
            self._finish[seq.index] = seq.finish_reason
        return output.finished or max(self._new) >= self._target

    def flush(self) -> dict:
        for i, count in enumerate(self._new):
            self._total[i] += count
        item = self._item(self._pieces)
        self._pieces = [[] for _ in self._pieces]
        self._new = [0] * len(self._new)
        self._target = next(self._sizes)
        return item

    def final(self, output) -> dict:
        """The single item of a non-streaming job, from its final output."""
        self._prompt_tokens = len(output.prompt_token_ids or ())
        for seq in output.outputs:
            self._total[seq.index] = len(seq.token_ids)
            self._finish[seq.index] = seq.finish_reason
        return self._item([[seq.text] for seq in sorted(output.outputs, key=lambda s: s.index)])

    def _item(self, pieces: list[list[str]]) -> dict:
        choices = [
            {"tokens": tokens, "finish_reason": finish}
            for tokens, finish in zip(pieces, self._finish, strict=True)
        ]
        usage = {"input": self._prompt_tokens, "output": sum(self._total)}
        return {"choices": choices, "usage": usage}
