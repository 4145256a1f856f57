"""Turning validation failures into the one-line messages users see in a failed job."""

from __future__ import annotations

from pydantic import ValidationError


class JobInputError(ValueError):
    """The job's input cannot be served; the message names the field and what was wrong."""


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
