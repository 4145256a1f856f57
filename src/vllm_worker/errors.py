"""Turning validation failures into the one-line messages users see in a failed job."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class JobError(Exception):
    """A job that fails on its own, the worker unharmed; `str()` is the message it fails with."""


class JobInputError(JobError, ValueError):
    """The job's input cannot be served; the message names the field and what was wrong."""


def validate(model: type[M], raw: object, prefix: str = "") -> M:
    """`raw` as a `model`, or `JobInputError` naming each wrong field (and, for an unknown
    one, the accepted fields)."""
    if not isinstance(raw, dict):
        raise JobInputError(f"{prefix or 'input'}: must be an object (got {type(raw).__name__})")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        message = describe(error, prefix)
        if "unknown field" in message:
            message += f". Accepted: {', '.join(model.model_fields)}"
        raise JobInputError(message) from None


def describe(error: ValidationError, prefix: str = "") -> str:
    """`field: what was wrong (got value)` for each problem, joined by '; '."""
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(p) for p in (prefix, *problem["loc"]) if p != "") or "input"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        elif problem["type"] != "missing":
            message += f" (got {_short(problem['input'])})"
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
