"""A native job's prompt, rendered by vLLM's own renderer as its OpenAI routes render theirs.

`messages` (and `prompt` with `apply_chat_template`) take the chat route's path: vLLM's
`ChatCompletionRequest` validates the turns, and `OnlineRenderer.render_chat` resolves the chat
template (`CUSTOM_CHAT_TEMPLATE` included), applies its default kwargs and content format,
guards against request-supplied templates and checks the prompt plus `max_tokens` against the
model's length. A plain `prompt` takes the completion route's `render_completion`. So one
conversation becomes the same prompt token ids on both paths, and the engine receives a
rendered input (vLLM deprecates handing it raw prompts).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from vllm_worker import media_parts, vllm_errors
from vllm_worker.errors import JobInputError, describe
from vllm_worker.native_input import NativeJob
from vllm_worker.sampling import SamplingInput

if TYPE_CHECKING:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.inputs import EngineInput
    from vllm.renderers.online_renderer import OnlineRenderer

R = TypeVar("R")
Request = TypeVar("Request", bound=BaseModel)


async def render(job: NativeJob, renderer: OnlineRenderer, max_tokens: int) -> EngineInput:
    """The engine input for `job`'s prompt, checked against a generation of `max_tokens`.

    Raises `JobInputError` naming the job field at fault: `messages` (or `prompt`) for the
    conversation, its length and the template, `messages.<i>.content.<j>.image_url` for an
    inline image that does not load, `sampling_params.max_tokens`,
    `chat_template_kwargs` or `tools`.
    """
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    chat = job.chat()
    if chat is None:
        completion = _request(CompletionRequest, {"prompt": job.prompt, "max_tokens": max_tokens})
        inputs = await _rendered(renderer.render_completion(completion), "prompt")
        return inputs[0]
    body: dict[str, Any] = {"messages": chat, "max_tokens": max_tokens}
    if job.chat_template_kwargs is not None:
        body["chat_template_kwargs"] = job.chat_template_kwargs
    if job.tools is not None:
        # Shown to the model by the template; no tool parser runs on a native job's output.
        body |= {"tools": job.tools, "tool_choice": "none"}
    _check_tool_calls(chat)
    request = _request(ChatCompletionRequest, body)
    _materialize_parts(request)
    try:
        _, inputs = await _rendered(renderer.render_chat(request), job.chat_field)
    except (JobInputError, NotImplementedError):  # vLLM's error for a data URL not in base64
        # vLLM does not say which image failed to load: find it, off the event loop.
        bad = await asyncio.to_thread(media_parts.bad_image_part, chat, renderer.model_config)
        if bad is None:
            raise
        raise JobInputError(f"{bad.field}: {bad.reason}") from None
    return inputs[0]


def _check_tool_calls(messages: list[dict[str, Any]]) -> None:
    """Each turn's `tool_calls`, checked where an error can still say which turn it is in.

    vLLM's request model checks them (with the same type) only after the whole request, and
    reports a bad one without its place in the conversation.
    """
    for i, message in enumerate(messages):
        if message.get("tool_calls") is not None:
            try:
                _tool_calls_type().validate_python(message["tool_calls"])
            except ValidationError as error:
                raise JobInputError(describe(error, f"messages.{i}.tool_calls")) from None


@functools.cache
def _tool_calls_type() -> TypeAdapter[list[Any]]:
    """The openai package's type of a turn's `tool_calls`, built once: building a pydantic
    adapter costs about 3 ms, more than rendering the whole conversation."""
    from openai.types.chat import ChatCompletionMessageToolCallUnionParam

    return TypeAdapter(list[ChatCompletionMessageToolCallUnionParam])


def _materialize_parts(request: ChatCompletionRequest) -> None:
    """Validate each turn's content parts now, naming the turn on error.

    vLLM's request model checks a list of parts lazily, while rendering, where an error no
    longer says which turn it is in; reading them here runs the same check.
    """
    for i, message in enumerate(request.messages):
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str | list):
            try:
                message["content"] = list(content)
            except ValidationError as error:
                raise JobInputError(describe(error, f"messages.{i}.content")) from None


def _request(model: type[Request], body: dict[str, Any]) -> Request:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        raise JobInputError(describe(error)) from None


async def _rendered(rendering: Awaitable[R | ErrorResponse], field: str) -> R:
    """The renderer's result, or `JobInputError` naming the field its error is about."""
    from vllm.entrypoints.serve.engine.protocol import ErrorResponse
    from vllm.exceptions import VLLMClientError

    try:
        result = await rendering
    except ValidationError as error:  # a turn vLLM validates only when rendering it
        raise JobInputError(describe(error, field)) from None
    except (VLLMClientError, ValueError) as error:  # the template's and length checks' errors
        raise JobInputError(f"{_field(error, field)}: {vllm_errors.message_of(error)}") from None
    if isinstance(result, ErrorResponse):
        problem = result.error
        where = _field_named(problem.param, field)
        raise JobInputError(f"{where}: {vllm_errors.in_worker_terms(problem.message)}")
    return result


def _field(error: Exception, field: str) -> str:
    return _field_named(getattr(error, "parameter", None), field)


def _field_named(parameter: str | None, field: str) -> str:
    """A job field for the request parameter vLLM named (None: the prompt or messages)."""
    if parameter in SamplingInput.model_fields:
        return f"sampling_params.{parameter}"
    if parameter in NativeJob.model_fields:
        return parameter
    return field
