"""The one batcher: vLLM's streamed delta outputs merged into batches by a `BatchPolicy`.

Both job kinds stream through it. A native job turns each batch into one item; an OpenAI job
hands vLLM's serving layer an engine client whose streams come already batched
(`BatchingEngineClient`), so the layer builds and serialises one chunk per batch instead of
one per token, and the SSE event it writes carries the whole batch.

What a batch holds (the promise the README states): it leaves as soon as its longest sequence
has at least the policy's next size in new tokens, or when the request finishes, or, with
`max_wait_s`, once its first tokens have waited that long. vLLM hands over several tokens in
one output when its reader falls behind (under load); those are never split, so a batch may
exceed its size by at most the tokens of the output that completed it, less one.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from vllm_worker.batching import TICK, BatchPolicy, paced

if TYPE_CHECKING:
    from vllm import RequestOutput
    from vllm.v1.engine.async_llm import AsyncLLM

#: The batch policy of the OpenAI job whose request vLLM's app is serving in this context
#: (set in the context its ASGI call runs in; unset elsewhere, where streams pass unbatched).
stream_policy: contextvars.ContextVar[BatchPolicy | None] = contextvars.ContextVar(
    "stream_policy", default=None
)


def new_tokens(output: RequestOutput) -> int:
    """Tokens in a delta output, counted on its longest sequence."""
    return max((len(seq.token_ids) for seq in output.outputs), default=0)


async def coalesce(
    outputs: AsyncIterator[RequestOutput], policy: BatchPolicy
) -> AsyncGenerator[RequestOutput]:
    """`outputs` (delta outputs of one request) merged into batches by `policy`.

    Each yielded output is the merge (vLLM's own `RequestOutput.add`) of the outputs since the
    last one: texts and token ids concatenated, log-probabilities extended, the last finish
    reason kept. Closing this generator closes `outputs`, which aborts the request.
    """
    sizes = policy.sizes()
    target = next(sizes)
    pending: RequestOutput | None = None
    count = 0
    first_at = 0.0

    def time_left() -> float | None:
        if pending is None or policy.max_wait_s is None:
            return None
        return max(0.0, first_at + policy.max_wait_s - time.monotonic())

    source = paced(outputs, time_left) if policy.max_wait_s else outputs
    async with aclosing(cast(AsyncGenerator[Any], source)) as deltas:
        async for delta in deltas:
            if delta is not TICK:
                output = cast("RequestOutput", delta)
                if pending is None:
                    pending, count, first_at = output, 0, time.monotonic()
                else:
                    pending.add(output, aggregate=True)
                count += new_tokens(output)
                if count < target and not output.finished:
                    continue
            if pending is not None:
                yield pending
                pending, target = None, next(sizes)
    if pending is not None:  # the source ended without a finished output
        yield pending


class BatchingEngineClient:
    """The engine as vLLM's OpenAI app sees it: a streamed request of an OpenAI job comes
    back in that job's batches (`stream_policy`); everything else is the engine itself."""

    def __init__(self, engine: AsyncLLM) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def generate(self, *args: Any, **kwargs: Any) -> AsyncGenerator[RequestOutput]:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        outputs = self._engine.generate(*args, **kwargs)
        params = kwargs.get("sampling_params", args[1] if len(args) > 1 else None)
        policy = stream_policy.get()
        if (
            policy is None
            or not isinstance(params, SamplingParams)
            or params.output_kind != RequestOutputKind.DELTA
        ):
            return outputs
        return coalesce(outputs, policy)
