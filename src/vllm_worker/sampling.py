"""The documented `sampling_params` of native jobs: the one table of names, types, defaults and
ranges, its validation, and its mapping onto vLLM.

vLLM 0.32 dropped `best_of`, `use_beam_search`, `length_penalty` and `early_stopping` from
`SamplingParams`; the worker still honours them (see `native` and `beam`), so the plan built
here says how to generate, not only with which `SamplingParams`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonDict

from vllm_worker import vllm_errors
from vllm_worker.errors import JobInputError, describe
from vllm_worker.errors import validate as validate_model
from vllm_worker.native_input import without_nulls

if TYPE_CHECKING:
    from vllm import SamplingParams

#: Marks a parameter plain vLLM 0.32 does not accept, which the worker implements itself.
BEYOND_VLLM: JsonDict = {"beyond_vllm": True}

#: `SamplingParams` fields not offered to jobs: the worker's own plumbing (output kind, stream
#: interval, cloning), vLLM's internal output format, and debugging or RL-only switches.
NOT_OFFERED = frozenset(
    {
        "output_kind",
        "stream_interval",
        "skip_clone",
        "output_text_buffer_length",
        "flat_logprobs",
        "prompt_logprob_token_ids",  # needs vLLM's V2 model runner
        "prompt_logprob_start",  # only with prompt_logprob_token_ids
        "routed_experts_prompt_start",
        "trace_decode_token_ids",
    }
)

#: Legacy structured-output names users still send, and their current `structured_outputs` key.
LEGACY_GUIDED = {
    "guided_json": "json",
    "guided_regex": "regex",
    "guided_choice": "choice",
    "guided_grammar": "grammar",
}

#: What beam search honours; anything else set away from its default is rejected.
BEAM_PARAMS = frozenset(
    {
        "n",
        "best_of",
        "use_beam_search",
        "length_penalty",
        "early_stopping",
        "temperature",
        "max_tokens",
        "ignore_eos",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "include_stop_str_in_output",
        "seed",
    }
)

TokenId = Annotated[int, Field(ge=0)]


class SamplingInput(BaseModel):
    """One job's `sampling_params`; unknown keys are rejected, types are not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    n: int = Field(1, ge=1, description="Number of output sequences returned.")
    best_of: int | None = Field(
        None,
        ge=1,
        description="Sequences generated; the `n` with the highest cumulative log-probability "
        "are returned. Defaults to `n`.",
        json_schema_extra=BEYOND_VLLM,
    )
    presence_penalty: float = Field(
        0.0, ge=-2, le=2, description="Penalizes tokens already present in the text."
    )
    frequency_penalty: float = Field(
        0.0, ge=-2, le=2, description="Penalizes tokens by their frequency in the text."
    )
    repetition_penalty: float = Field(
        1.0, gt=0, description="Penalizes repeated tokens; 1.0 means no penalty."
    )
    temperature: float = Field(
        1.0, ge=0, le=2, description="Randomness; 0 is greedy (and required for beam search)."
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Probability mass of top tokens kept.")
    top_k: int = Field(-1, ge=-1, description="Top tokens kept; -1 (or 0) keeps all.")
    min_p: float = Field(
        0.0, ge=0, le=1, description="Minimum probability relative to the most likely token."
    )
    use_beam_search: bool = Field(
        False,
        description="Beam search of width `max(n, best_of)` instead of sampling.",
        json_schema_extra=BEYOND_VLLM,
    )
    length_penalty: float = Field(
        1.0,
        description="Beam search: scores are divided by length to this power.",
        json_schema_extra=BEYOND_VLLM,
    )
    early_stopping: bool | Literal["never"] = Field(
        False,
        description="Beam search: `true` stops once `beam_width` candidates finished, `false` "
        'once no better candidate is possible, `"never"` only at `max_tokens`.',
        json_schema_extra=BEYOND_VLLM,
    )
    stop: str | list[str] | None = Field(None, description="Stop at any of these strings.")
    stop_token_ids: list[TokenId] | None = Field(
        None, description="Stop at any of these token ids."
    )
    ignore_eos: bool = Field(False, description="Keep generating after end-of-sequence.")
    max_tokens: int = Field(16, ge=1, description="Most tokens generated per sequence.")
    min_tokens: int = Field(0, ge=0, description="Tokens generated before a stop may end it.")
    skip_special_tokens: bool = Field(True, description="Leave special tokens out of the text.")
    spaces_between_special_tokens: bool = Field(
        True, description="Put spaces between special tokens in the text."
    )
    include_stop_str_in_output: bool = Field(False, description="Keep the stop string in text.")
    seed: int | None = Field(None, description="Random seed, for reproducible sampling.")
    logprobs: int | None = Field(
        None, ge=-1, description="Log-probabilities of this many top tokens per output token."
    )
    prompt_logprobs: int | None = Field(
        None, ge=-1, description="Log-probabilities of this many top tokens per prompt token."
    )
    logprob_token_ids: list[TokenId] | None = Field(
        None,
        description="Log-probabilities of exactly these tokens (and the generated one) per "
        "output token, instead of the top ones.",
    )
    # JSON object keys are strings: token ids in `logit_bias` arrive as "123".
    logit_bias: dict[Annotated[int, Strict(False)], float] | None = Field(
        None, description="Bias added to the logits of these token ids."
    )
    allowed_token_ids: list[TokenId] | None = Field(
        None, description="Only these token ids may be generated."
    )
    bad_words: list[str] | None = Field(None, description="Words that must not be generated.")
    structured_outputs: dict[str, Any] | None = Field(
        None,
        description="Constrained output: one of `json` (a schema), `regex`, `choice`, "
        "`grammar`, `json_object`, `structural_tag`. The legacy `guided_json`, "
        "`guided_regex`, `guided_choice` and `guided_grammar` keys are translated to it.",
    )
    detokenize: bool = Field(True, description="Produce text; false returns no text.")
    watermarking: bool | None = Field(None, description="Watermark the output, if configured.")
    thinking_token_budget: int | None = Field(
        None, ge=0, description="Most tokens a reasoning model may spend thinking."
    )
    repetition_detection: dict[str, Any] | None = Field(
        None, description="End generation on repetitive n-gram patterns (vLLM's parameters)."
    )
    skip_reading_prefix_cache: bool | None = Field(
        None, description="Do not reuse cached prompt prefixes for this request."
    )
    extra_args: dict[str, Any] | None = Field(
        None, description="Extra arguments for custom sampling plugins."
    )

    @model_validator(mode="before")
    @classmethod
    def _translate_legacy_guided(cls, raw: Any) -> Any:
        raw = without_nulls(raw)
        if not isinstance(raw, dict) or not LEGACY_GUIDED.keys() & raw.keys():
            return raw
        structured = raw.get("structured_outputs") or {}
        if not isinstance(structured, dict):
            return raw  # field validation reports the wrong type
        raw, structured = dict(raw), dict(structured)
        for legacy, key in LEGACY_GUIDED.items():
            if legacy in raw:
                structured[key] = raw.pop(legacy)
        raw["structured_outputs"] = structured
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> SamplingInput:
        if self.best_of is not None and self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) must be at least n ({self.n})")
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({self.max_tokens})"
            )
        width = max(self.n, self.best_of or self.n)
        if self.temperature == 0 and width > 1 and not self.use_beam_search:
            raise ValueError(
                f"n and best_of must be 1 with temperature 0 (got {width}): greedy sequences "
                "are all the same; use use_beam_search for several"
            )
        if self.use_beam_search:
            if self.temperature != 0:
                raise ValueError(f"use_beam_search needs temperature 0 (got {self.temperature})")
            others = sorted(self.model_fields_set - BEAM_PARAMS - _unchanged(self))
            if others:
                raise ValueError(
                    f"use_beam_search does not support {', '.join(others)}; "
                    f"it honours {', '.join(sorted(BEAM_PARAMS))}"
                )
        return self


def _unchanged(params: SamplingInput) -> set[str]:
    """Fields given with their default value (harmless beside beam search)."""
    return {
        name
        for name in params.model_fields_set
        if getattr(params, name) == SamplingInput.model_fields[name].default
    }


@dataclasses.dataclass(frozen=True)
class BeamSearch:
    """How to run a beam search (vLLM's own search has no early stopping)."""

    width: int
    n: int
    max_tokens: int
    length_penalty: float
    early_stopping: bool | Literal["never"]
    ignore_eos: bool
    include_stop_str_in_output: bool
    skip_special_tokens: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one native job generates: engine parameters, and best-of or beam search if any."""

    params: SamplingParams  # with n = best_of when best_of > n
    n: int
    best_of: int | None = None  # set when more candidates are generated than returned
    beam: BeamSearch | None = None
    logprobs: bool = False  # the user asked for log-probabilities of the generated tokens
    prompt_logprobs: bool = False  # ... and of the prompt's


def validate(raw: object) -> SamplingInput:
    """Check a job's `sampling_params`, or raise `JobInputError` naming the field."""
    return validate_model(SamplingInput, raw, "sampling_params")


def parse(raw: object) -> Plan:
    """Validate a job's `sampling_params` and plan the generation."""
    from vllm import SamplingParams
    from vllm.exceptions import VLLMError
    from vllm.sampling_params import RepetitionDetectionParams, StructuredOutputsParams

    params = validate(raw)
    beyond = {name for name, f in SamplingInput.model_fields.items() if f.json_schema_extra}
    values = params.model_dump(exclude=beyond, exclude_none=True)
    values["top_k"] = max(params.top_k, 0)  # vLLM spells "no limit" 0, RunPod's docs -1
    nested = {
        "structured_outputs": StructuredOutputsParams,
        "repetition_detection": RepetitionDetectionParams,
    }
    for name, kind in nested.items():
        if name in values:
            try:
                values[name] = kind(**without_nulls(values[name]))
            except ValidationError as error:
                raise JobInputError(describe(error, f"sampling_params.{name}")) from None
            except (TypeError, ValueError, VLLMError) as error:
                raise JobInputError(
                    f"sampling_params.{name}: {vllm_errors.message_of(error)}"
                ) from None
    best_of = params.best_of if params.best_of and params.best_of > params.n else None
    if params.use_beam_search:
        values["n"] = 1  # each search step is one greedy request
    elif best_of:
        values["n"] = best_of
        values.setdefault("logprobs", 0)  # the sampled tokens' log-probabilities rank them
    try:
        engine_params = SamplingParams(**values)
    except (TypeError, ValueError, VLLMError) as error:
        field = vllm_errors.parameter_of(error, SamplingInput.model_fields)
        where = f"sampling_params.{field}" if field else "sampling_params"
        raise JobInputError(f"{where}: {vllm_errors.message_of(error)}") from None

    beam = None
    if params.use_beam_search:
        beam = BeamSearch(
            width=max(params.n, params.best_of or params.n),
            n=params.n,
            max_tokens=params.max_tokens,
            length_penalty=params.length_penalty,
            early_stopping=params.early_stopping,
            ignore_eos=params.ignore_eos,
            include_stop_str_in_output=params.include_stop_str_in_output,
            skip_special_tokens=params.skip_special_tokens,
        )
        best_of = None
    return Plan(
        params=engine_params,
        n=params.n,
        best_of=best_of,
        beam=beam,
        logprobs=params.logprobs is not None or params.logprob_token_ids is not None,
        prompt_logprobs=params.prompt_logprobs is not None,
    )


def markdown_table() -> str:
    """The README's table of sampling parameters, generated from `SamplingInput`."""
    properties = SamplingInput.model_json_schema()["properties"]
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for name, field in SamplingInput.model_fields.items():
        default = "`n`" if name == "best_of" else f"`{json.dumps(field.default)}`"
        mark = " **Beyond vLLM.**" if field.json_schema_extra else ""
        kind = _type_name(properties[name])
        rows.append(f"| `{name}` | {kind} | {default} | {field.description}{mark} |")
    return "\n".join(rows)


def _type_name(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_type_name(s) for s in schema["anyOf"] if s.get("type") != "null")
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if schema.get("type") == "array":
        return f"list of {_type_name(schema['items'])}"
    return {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}.get(
        schema.get("type", ""), "object"
    )
