"""The `input` of a native job, validated into a typed model or a clear error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vllm_worker.errors import validate


class ChatMessage(BaseModel):
    """One chat turn; extra keys (name, tool_calls, ...) are handed to the chat template."""

    model_config = ConfigDict(extra="allow", strict=True)

    role: str = Field(min_length=1)
    content: str


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
    sampling_params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters (see the sampling table)."
    )
    stream: bool = Field(False, description="Stream tokens in growing batches.")
    max_batch_size: int | None = Field(None, ge=1, description="Largest streamed batch.")
    min_batch_size: int | None = Field(None, ge=1, description="First streamed batch.")
    batch_size_growth_factor: float | None = Field(None, ge=1, description="Batch growth.")

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


def parse_native(raw: object) -> NativeJob:
    """Validate a native job's input or raise `JobInputError` naming the field."""
    return validate(NativeJob, raw)
