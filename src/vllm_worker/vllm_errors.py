"""vLLM's error messages in the worker's terms.

vLLM words its errors for `vllm serve` users: they name command-line flags, and a parameter
check names the parameter as vLLM's API spells it. A worker user sets environment variables
and writes job fields, so the messages they see name those instead. Used for native job
errors, OpenAI error bodies and start-up errors alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from types import FrameType

from vllm_worker.config import flag_variables

#: vLLM's wording when a model has no chat template (`vllm/renderers/hf.py`).
_NO_CHAT_TEMPLATE = "you must provide a chat template if the tokenizer does not define one"

NO_CHAT_TEMPLATE = (
    "this model has no chat template: set CUSTOM_CHAT_TEMPLATE to a Jinja chat template (its "
    "text or a file path), or send `prompt` without `apply_chat_template`"
)

_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def in_worker_terms(message: str) -> str:
    """`message` with each known `vllm serve` flag shown as the worker's variable
    (`TOOL_CALL_PARSER (--tool-call-parser)`), and vLLM's missing-chat-template error as the
    setting that fixes it."""
    if _NO_CHAT_TEMPLATE in message:
        return NO_CHAT_TEMPLATE
    names = flag_variables()

    def named(match: re.Match[str]) -> str:
        flag = match.group(0)
        return f"{names[flag]} ({flag})" if flag in names else flag

    return _FLAG.sub(named, message)


def parameter_of(error: Exception, fields: Iterable[str]) -> str | None:
    """The request parameter among `fields` a vLLM validation error is about, if any.

    vLLM names it in `VLLMValidationError.parameter` for most checks; `SamplingParams` runs
    the others in a method named after it (`_validate_structured_outputs`), and the rest start
    their message with it (`thinking_token_budget is set but ...`).
    """
    known = list(fields)
    parameter = getattr(error, "parameter", None)
    if isinstance(parameter, str) and parameter in known:
        return parameter
    for name in reversed(_functions(error)):  # the innermost check first
        if name.removeprefix("_validate_") in known:
            return name.removeprefix("_validate_")
    return next((word for word in re.findall(r"[a-z_]+", str(error)) if word in known), None)


def from_parameter_checks(error: BaseException) -> bool:
    """Whether vLLM raised `error` while checking a request's sampling parameters (in
    `SamplingParams` or the input processor's `_validate_params`), not its prompt."""
    return any(name == "_validate_params" for name in _functions(error)) or any(
        path.endswith("sampling_params.py") for path in _files(error)
    )


def _functions(error: BaseException) -> list[str]:
    return [frame.f_code.co_name for frame in _frames(error)]


def _files(error: BaseException) -> list[str]:
    return [frame.f_code.co_filename for frame in _frames(error)]


def _frames(error: BaseException) -> list[FrameType]:
    """The frames `error` passed through, outermost first."""
    frames = []
    trace = error.__traceback__
    while trace is not None:
        frames.append(trace.tb_frame)
        trace = trace.tb_next
    return frames


def message_of(error: Exception) -> str:
    """The error's own message on one line, without the `(parameter=..., value=...)` that
    `VLLMValidationError` appends (the worker names the field itself)."""
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return in_worker_terms(" ".join(text.split()))
