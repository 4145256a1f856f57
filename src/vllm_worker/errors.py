"""Turning validation failures into the one-line messages users see in a failed job."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

M = TypeVar("M", bound=BaseModel)
Loc = tuple[int | str, ...]  # where in the input a problem is

#: Most problems one message lists; a 400,000-item list must not make a 400,000-part message.
MAX_PROBLEMS = 5

#: How pydantic names a union alternative of a plain type in an error's location.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "dict", "list", "none"})


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
    """`field: what was wrong (got value)` for each problem, joined by '; '.

    Where a value may take one of several shapes (a union, such as vLLM's chat message
    types), pydantic reports every shape's problems; only those of the shape the value chose
    (by its literal fields, such as `role`) are kept, and a field's alternatives are joined
    with "or", so the message reads as the one mistake the user made.
    """
    grouped: dict[str, list[ErrorDetails]] = {}
    for problem in _chosen(error.errors(include_url=False)):
        where = _where(prefix, [p for p in problem["loc"] if not _is_tag(p)])
        grouped.setdefault(where or "input", []).append(problem)
    parts = []
    for where, problems in list(grouped.items())[:MAX_PROBLEMS]:
        messages = dict.fromkeys(_message(p) for p in problems)
        text = " or ".join(messages)
        first = problems[0]
        if first["type"] not in ("missing", "extra_forbidden"):
            text += f" (got {_short(first['input'])})"
        parts.append(f"{where}: {text}")
    if len(grouped) > MAX_PROBLEMS:
        parts.append(f"and {len(grouped) - MAX_PROBLEMS} more problems")
    return "; ".join(parts)


def _where(prefix: str, loc: list[int | str]) -> str:
    """`sampling_params.stop.0`; a key that is not a plain name (a dict key the user wrote)
    is quoted, `logit_bias["\\n"]`, so the message stays one line."""
    where = prefix
    for segment in loc:
        if isinstance(segment, int) or segment.isidentifier():
            where = f"{where}.{segment}" if where else str(segment)
        else:
            where += f"[{json.dumps(segment)}]"
    return where


def _message(problem: ErrorDetails) -> str:
    if problem["type"] == "extra_forbidden":
        return "unknown field"
    return problem["msg"].removeprefix("Value error, ")


def _is_tag(segment: int | str) -> bool:
    """Whether a location segment names a union alternative rather than a field."""
    return isinstance(segment, str) and (
        segment[:1].isupper() or "[" in segment or segment in _TYPE_TAGS
    )


def _chosen(problems: Sequence[ErrorDetails]) -> list[ErrorDetails]:
    """The problems of the union alternatives a value chose (see `describe`).

    An alternative named by a class is ruled out when one of its literal fields did not
    match; of those left, the first (in the union's order) is the one the value chose. If
    every alternative was ruled out, the literal mismatches themselves are the problem.
    """
    branches: dict[Loc, list[Loc]] = {}
    wrong: set[Loc] = set()
    for problem in problems:
        loc = tuple(problem["loc"])
        for i, segment in enumerate(loc):
            if isinstance(segment, str) and segment[:1].isupper():
                branch = loc[: i + 1]
                seen = branches.setdefault(loc[:i], [])
                if branch not in seen:
                    seen.append(branch)
                if problem["type"] == "literal_error" and len(loc) == i + 2:
                    wrong.add(branch)
    dropped: set[Loc] = set()  # every problem under these goes
    literal_only: set[Loc] = set()  # only the literal mismatches under these stay
    for alternatives in branches.values():
        right = [b for b in alternatives if b not in wrong]
        if right:
            dropped.update(b for b in alternatives if b != right[0])
        else:
            literal_only.update(alternatives)
    return [
        p
        for p in problems
        if not _under(p, dropped) and (p["type"] == "literal_error" or not _under(p, literal_only))
    ]


def _under(problem: ErrorDetails, branches: set[Loc]) -> bool:
    loc = tuple(problem["loc"])
    return any(loc[: len(b)] == b for b in branches)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
