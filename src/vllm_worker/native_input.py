"""The `input` of a native job, validated into a typed model or a clear error.

Only the job's own envelope is checked here; the chat turns themselves are validated and
rendered by vLLM (see `native_prompt`), so that they accept exactly what its OpenAI chat route
accepts.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vllm_worker.errors import validate


def without_nulls(raw: Any) -> Any:
    """An object's members without those that are JSON null: null means "not given".

    JavaScript clients and form builders send `"max_tokens": null` for a field left empty;
    OpenAI's API treats that as not set, and so do native jobs.
    """
    if isinstance(raw, dict):
        return {key: value for key, value in raw.items() if value is not None}
    return raw


class ChatMessage(BaseModel):
    """One chat turn. Its `role` is checked here (vLLM's message types are told apart by it);
    every other key (`content` as a string or a list of parts, `name`, `tool_calls`,
    `tool_call_id`, ...) is validated by vLLM as its chat route does."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: str = Field(min_length=1)


class NativeJob(BaseModel):
    """A native job's input, as documented in RunPod's "Send vLLM requests" page."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prompt: str | None = Field(None, description="Text to continue.")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, description="Chat turns; win over `prompt`."
    )
    apply_chat_template: bool = Field(
        False, description="Wrap `prompt` as a user message and apply the chat template."
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None,
        description="Extra variables for the chat template, such as "
        '`{"enable_thinking": false}` for reasoning models.',
    )
    tools: list[dict[str, Any]] | None = Field(
        None,
        description="Tool definitions (OpenAI's `tools` shape) the chat template shows the "
        "model; the output is returned as text, not parsed into tool calls.",
    )
    model: str | None = Field(
        None,
        description="A served LoRA adapter's name (see /v1/models), or with "
        "LORA_LOAD_ON_DEMAND an adapter's absolute folder path or hub id; unset or the "
        "served model's name: the base model.",
    )
    sampling_params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters (see the sampling table)."
    )
    stream: bool = Field(False, description="Stream tokens in growing batches.")
    max_batch_size: int | None = Field(None, ge=1, description="Largest streamed batch.")
    min_batch_size: int | None = Field(None, ge=1, description="First streamed batch.")
    batch_size_growth_factor: float | None = Field(None, ge=1, description="Batch growth.")

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_unset(cls, raw: Any) -> Any:
        return without_nulls(raw)

    @model_validator(mode="after")
    def _has_prompt(self) -> NativeJob:
        if self.messages is None and self.prompt is None:
            raise ValueError("give `prompt` (a string) or `messages` (a list of chat turns)")
        return self

    def chat(self) -> list[dict[str, Any]] | None:
        """The conversation to template, or None when the prompt is used as it is."""
        if self.messages is not None:
            return [message.model_dump() for message in self.messages]
        if self.apply_chat_template:
            return [{"role": "user", "content": self.prompt}]
        return None

    @property
    def chat_field(self) -> str:
        """The field a chat's problems are reported under."""
        return "messages" if self.messages is not None else "prompt"


def parse_native(raw: object) -> NativeJob:
    """Validate a native job's input or raise `JobInputError` naming the field."""
    return validate(NativeJob, raw)
