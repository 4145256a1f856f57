"""The documented `sampling_params` of native jobs, checked and mapped onto vLLM.

Defaults and ranges follow RunPod's documentation; vLLM's own checks in `SamplingParams`
run afterwards as a second line, so nothing invalid reaches the engine.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from vllm_worker.errors import JobInputError, describe


class SamplingInput(BaseModel):
    """One job's `sampling_params`; unknown keys are rejected, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    n: int = Field(1, ge=1, description="Number of output sequences returned.")
    best_of: int | None = Field(
        None, ge=1, description="Sequences generated before the best `n` are kept (default n)."
    )
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty for tokens present.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty by token frequency.")
    repetition_penalty: float = Field(1.0, gt=0, description="Penalty for repeated tokens.")
    temperature: float = Field(1.0, ge=0, le=2, description="Randomness; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Probability mass of top tokens kept.")
    top_k: int = Field(-1, ge=-1, description="Top tokens kept; -1 or 0 keeps all.")
    min_p: float = Field(0.0, ge=0, le=1, description="Minimum probability relative to the top.")
    use_beam_search: bool = Field(False, description="Beam search instead of sampling.")
    length_penalty: float = Field(1.0, description="Beam search length penalty.")
    early_stopping: bool | Literal["never"] = Field(False, description="Beam search stopping.")
    stop: str | list[str] | None = Field(None, description="Stop at any of these strings.")
    stop_token_ids: list[int] | None = Field(None, description="Stop at any of these tokens.")
    ignore_eos: bool = Field(False, description="Keep generating after end-of-sequence.")
    max_tokens: int = Field(16, ge=1, description="Most tokens generated per sequence.")
    skip_special_tokens: bool = Field(True, description="Leave special tokens out of the text.")
    spaces_between_special_tokens: bool = Field(
        True, description="Put spaces between special tokens in the text."
    )
    seed: int | None = Field(None, description="Random seed, for reproducible sampling.")
    min_tokens: int = Field(0, ge=0, description="Tokens generated before a stop may end it.")
    logprobs: int | None = Field(None, ge=0, description="Top log-probabilities per token.")
    prompt_logprobs: int | None = Field(
        None, ge=0, description="Log-probabilities per prompt token."
    )
    include_stop_str_in_output: bool = Field(False, description="Keep the stop string in text.")
    # JSON object keys are strings: token ids in `logit_bias` arrive as "123".
    logit_bias: dict[Annotated[int, Strict(False)], float] | None = Field(
        None, description="Bias added to token logits."
    )
    allowed_token_ids: list[int] | None = Field(None, description="Only these tokens may appear.")
    bad_words: list[str] | None = Field(None, description="Words that must not appear.")
    structured_outputs: dict[str, Any] | None = Field(
        None, description="Constrained output: json, regex, choice or grammar."
    )

    @model_validator(mode="after")
    def _consistent(self) -> SamplingInput:
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be at least n ({self.n})")
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
            )
        return self


_BEAM_ONLY = ("use_beam_search", "best_of", "length_penalty", "early_stopping")


def parse(raw: object):  # -> vllm.SamplingParams (import deferred: vLLM is heavy)
    """Validate a job's `sampling_params` and build vLLM's `SamplingParams` from them."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMError
    from vllm.sampling_params import StructuredOutputsParams

    if not isinstance(raw, dict):
        raise JobInputError(f"sampling_params: must be an object (got {type(raw).__name__})")
    try:
        params = SamplingInput.model_validate(raw)
    except ValidationError as error:
        message = describe(error, "sampling_params")
        if "unknown field" in message:
            message += f". Accepted: {', '.join(SamplingInput.model_fields)}"
        raise JobInputError(message) from None
    if params.use_beam_search or (params.best_of or params.n) != params.n:
        raise JobInputError("sampling_params: best_of > n and use_beam_search are not supported")

    values = params.model_dump(exclude=set(_BEAM_ONLY), exclude_none=True)
    values["top_k"] = max(params.top_k, 0)  # vLLM spells "no limit" as 0, RunPod as -1
    if params.structured_outputs is not None:
        try:
            values["structured_outputs"] = StructuredOutputsParams(**params.structured_outputs)
        except (TypeError, ValueError, VLLMError) as error:
            raise JobInputError(f"sampling_params.structured_outputs: {error}") from None
    try:
        return SamplingParams(**values)
    except (TypeError, ValueError, VLLMError) as error:
        raise JobInputError(f"sampling_params: {error}") from None
