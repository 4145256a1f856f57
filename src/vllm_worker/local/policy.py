"""A request's `policy`: RunPod's per-job execution timeout and time-to-live, with its limits.

RunPod documents both in milliseconds: `executionTimeout` from 5 s to 7 days (the endpoint's
setting when absent), `ttl` from 10 s to 7 days (24 hours when absent). A value outside them,
or not a whole number, is refused with HTTP 400 here instead of being taken as something else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

WEEK_MS = 7 * 24 * 3600 * 1000
EXECUTION_TIMEOUT_MS = (5_000, WEEK_MS)
TTL_MS = (10_000, WEEK_MS)


class Policy(BaseModel):
    """The fields of `policy` the endpoint honours; others (`lowPriority`, ...) are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True, frozen=True)

    execution_timeout_ms: int | None = Field(
        None,
        alias="executionTimeout",
        ge=EXECUTION_TIMEOUT_MS[0],
        le=EXECUTION_TIMEOUT_MS[1],
    )
    ttl_ms: int | None = Field(None, alias="ttl", ge=TTL_MS[0], le=TTL_MS[1])


class PolicyError(ValueError):
    """A policy RunPod would refuse; the message names the field and its accepted range."""


def _range(field: str) -> str:
    low, high = EXECUTION_TIMEOUT_MS if field == "executionTimeout" else TTL_MS
    return f"{low} ({low // 1000} s) to {high} (7 days)"


def parse_policy(raw: object) -> Policy:
    """The request's `policy` (absent or null: the defaults), or `PolicyError`."""
    if raw is None:
        return Policy.model_validate({})
    if not isinstance(raw, dict):
        raise PolicyError(f"policy: must be an object (got {type(raw).__name__})")
    try:
        return Policy.model_validate(raw)
    except ValidationError as error:
        fields = sorted({str(problem["loc"][0]) for problem in error.errors()})
        raise PolicyError(
            "; ".join(
                f"policy.{field}: must be a whole number of milliseconds from {_range(field)} "
                f"(got {raw.get(field)!r:.40})"
                for field in fields
            )
        ) from None
