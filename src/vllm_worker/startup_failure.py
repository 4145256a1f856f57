"""Known fatal start-up failures, each told in one sentence: which variable to change, and to what.

A worker that exits at start-up is started again and again by the platform while jobs wait; a
failure that a setting causes will not pass by itself, so `__main__` instead fails every job
with the sentence `classify` returns (see `failed_worker`). What cannot be classified, or may
pass by itself (the hub unreachable), is left to the caller to exit on.

The rules read the error and what vLLM's child processes printed (`output_tee`): the engine
core's failures reach the worker only as "Engine core initialization failed. See root cause
above". The texts matched are vLLM 0.32's own: `config/model.py` (`max_model_len` above the
model's), `v1/core/kv_cache_utils.py` (`_check_enough_kv_cache_memory`),
`v1/worker/utils.py` (free memory below the requested utilization),
`model_executor/models/registry.py` (unsupported architectures), `exceptions.py` (LoRA
adapters), `parser/parser_manager.py` (tool parsers); the Hub's errors are huggingface_hub's
(`utils/_http.py`, `hf_raise_for_status`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
from collections.abc import Callable, Iterator, Mapping

from pydantic import BaseModel, ConfigDict

from vllm_worker.config import Config, ConfigError, setting, variable_for

#: Where vLLM lists the architectures it supports.
SUPPORTED_MODELS_URL = "https://docs.vllm.ai/en/latest/models/supported_models.html"


class Reason(enum.StrEnum):
    INVALID_SETTING = "invalid setting"
    MODEL_NOT_FOUND = "model not found"
    NOT_AUTHORISED = "not authorised"
    REVISION_NOT_FOUND = "revision not found"
    UNSUPPORTED_ARCHITECTURE = "unsupported architecture"
    MAX_MODEL_LEN_TOO_LONG = "MAX_MODEL_LEN above the model's limit"
    KV_CACHE_TOO_SMALL = "KV cache too small"
    OUT_OF_MEMORY = "out of memory"
    DISK_FULL = "disk full"
    BAD_LORA_MODULES = "bad LORA_MODULES"
    TOOL_PARSER_MISSING = "tool parser missing"


class StartUpFailure(BaseModel):
    """Why the worker cannot start, as the user reads it in each failed job."""

    model_config = ConfigDict(frozen=True)

    reason: Reason
    variable: str  # the variable to change
    message: str  # one sentence naming `variable`, and a value that works when one is known


class StartUpError(Exception):
    """A start-up check found a known failure (`preflight`); `classify` returns it as is."""

    def __init__(self, failure: StartUpFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclasses.dataclass(frozen=True)
class Clues:
    """What a rule may read: the error and its causes, what was printed, the settings."""

    errors: tuple[BaseException, ...]
    output: str
    config: Config | None
    environ: Mapping[str, str]

    @property
    def text(self) -> str:
        return "\n".join([*(str(e) for e in self.errors), self.output])

    def search(self, pattern: str) -> re.Match[str] | None:
        """The last match: the root cause is printed after earlier, unrelated lines."""
        matches = list(re.finditer(pattern, self.text))
        return matches[-1] if matches else None

    def arg(self, dest: str) -> object:
        return getattr(self.config.vllm_args, dest, None) if self.config else None

    def shown(self, dest: str) -> str:
        """`VAR=value` for a vLLM flag, as the user set it (or as it is in effect)."""
        var = variable_for(dest)
        value = setting(self.environ, var) or self.arg(dest)
        return f"{var}={value}"


def classify(
    error: BaseException, output: str, config: Config | None, environ: Mapping[str, str]
) -> StartUpFailure | None:
    """The known failure behind `error`, or None when it is not one (or may pass by itself).

    `output` is what this process and its children printed during start-up; `config` the
    settings when they could be read.
    """
    clues = Clues(tuple(_chain(error)), output, config, environ)
    for rule in RULES:
        if (failure := rule(clues)) is not None:
            return failure
    return None


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _known(clues: Clues) -> StartUpFailure | None:
    for error in clues.errors:
        if isinstance(error, StartUpError):
            return error.failure
    return None


def _invalid_setting(clues: Clues) -> StartUpFailure | None:
    for error in clues.errors:
        if isinstance(error, ConfigError):
            match = re.match(r"([A-Z][A-Z0-9_]*)", str(error))
            return StartUpFailure(
                reason=Reason.INVALID_SETTING,
                variable=match[1] if match else "?",
                message=f"Invalid setting {error}; correct it, or leave it blank for the default.",
            )
    return None


def hub_failure(
    error: BaseException, name: str, tokenizer: bool, token_set: bool
) -> StartUpFailure | None:
    """The Hub's refusal of repository `name` (the model, or the separate tokenizer) as a
    failure, or None for an error that is not the repository's (network, server, rate limit)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for kind in (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        if isinstance(error, kind):  # a gated repository's error is also a not-found one
            return _hub_refusal(kind.__name__, name, tokenizer, token_set)
    response = getattr(error, "response", None)
    if (
        isinstance(error, HfHubHTTPError)
        and response is not None
        and response.status_code in (401, 403)
    ):
        what = variable_for("tokenizer" if tokenizer else "model")
        return StartUpFailure(
            reason=Reason.NOT_AUTHORISED,
            variable="HF_TOKEN",
            message=f"The Hugging Face Hub refused HF_TOKEN for {what}={name} (HTTP "
            f"{response.status_code}): set HF_TOKEN to a valid token with read access "
            "(huggingface.co/settings/tokens), or leave it blank for a public model.",
        )
    return None


def _hub_refusal(kind: str, name: str, tokenizer: bool, token_set: bool) -> StartUpFailure:
    """The sentence for huggingface_hub's error class `kind` about repository `name`."""
    what = variable_for("tokenizer" if tokenizer else "model")
    if kind == "GatedRepoError":
        who = (
            "the account of HF_TOKEN has no access: accept its terms on huggingface.co with that "
            "account, or set HF_TOKEN to a token of an account that has"
            if token_set
            else "HF_TOKEN is unset: accept its terms on huggingface.co and set HF_TOKEN to a "
            "token of that account"
        )
        return StartUpFailure(
            reason=Reason.NOT_AUTHORISED,
            variable="HF_TOKEN",
            message=f"{what}={name} is a gated model and {who}.",
        )
    if kind == "RevisionNotFoundError":
        revision = variable_for("tokenizer_revision" if tokenizer else "revision")
        return StartUpFailure(
            reason=Reason.REVISION_NOT_FOUND,
            variable=revision,
            message=f"{revision} is not a branch, tag or commit of {name}: set it to one that "
            "exists, or leave it blank for the default branch.",
        )
    private = "HF_TOKEN has no access to it" if token_set else "HF_TOKEN is unset"
    return StartUpFailure(
        reason=Reason.MODEL_NOT_FOUND,
        variable=what,
        message=f"{what}={name} is not a repository on the Hugging Face Hub, or it is "
        f"private and {private}: check the id (owner/name), or set HF_TOKEN to a token "
        "with access.",
    )


def _hub_in_output(clues: Clues) -> StartUpFailure | None:
    """A Hub error in a child's traceback: the model runner downloads the weights."""
    match = clues.search(
        r"huggingface_hub\.errors\.(GatedRepoError|RepositoryNotFoundError|RevisionNotFoundError)"
    )
    if match is None:
        return None
    name = setting(clues.environ, variable_for("model")) or str(clues.arg("model"))
    token_set = setting(clues.environ, "HF_TOKEN") is not None
    return _hub_refusal(match[1], name, False, token_set)


def _hub(clues: Clues) -> StartUpFailure | None:
    """A Hub error raised in this process (by vLLM, when the pre-flight could not run)."""
    model = str(clues.arg("model") or "")
    tokenizer = str(clues.arg("tokenizer") or model)
    token_set = setting(clues.environ, "HF_TOKEN") is not None
    for error in clues.errors:
        repo = getattr(error, "repo_id", None)
        is_tokenizer = repo is not None and repo == tokenizer and tokenizer != model
        name = repo or model
        if (failure := hub_failure(error, name, is_tokenizer, token_set)) is not None:
            return failure
    return None


def _max_model_len_too_long(clues: Clues) -> StartUpFailure | None:
    match = clues.search(
        r"User-specified max_model_len \((\d+)\) is greater than the derived max_model_len "
        r"\(\w+=([\d.]+) or model_max_length=([\d.]+|None)"
    )
    if match is None:
        return None
    limits = [float(match[2])] + ([float(match[3])] if match[3] != "None" else [])
    limit = int(max(limits))
    var = variable_for("max_model_len")
    return StartUpFailure(
        reason=Reason.MAX_MODEL_LEN_TOO_LONG,
        variable=var,
        message=f"{var}={match[1]} is more than this model's limit of {limit} tokens: set "
        f"{var}={limit} or less, or leave it blank for the model's own.",
    )


def _kv_cache_too_small(clues: Clues) -> StartUpFailure | None:
    var = variable_for("max_model_len")
    memory = f"{variable_for('gpu_memory_utilization')} or {variable_for('kv_cache_memory_bytes')}"
    match = clues.search(
        r"To serve at least one request with the model's max seq len \((\d+)\).*?"
        r"(?:the estimated maximum model length is (\d+))?\. Try increasing"
    )
    if match is not None:
        fits = (
            f"holds at most {match[2]} tokens for one request: set {var}={match[2]} or less"
            if match[2]
            else "cannot hold one request of that length: lower it"
        )
        return StartUpFailure(
            reason=Reason.KV_CACHE_TOO_SMALL,
            variable=var,
            message=f"{var}={match[1]} does not fit the KV cache, which {fits} (or leave it "
            f"blank to serve what fits), or give the cache more memory with {memory}.",
        )
    if clues.search(r"No available memory for the cache blocks|Cannot auto-fit max_model_len"):
        return StartUpFailure(
            reason=Reason.KV_CACHE_TOO_SMALL,
            variable=variable_for("gpu_memory_utilization"),
            message=f"No memory is left for the KV cache once the model is loaded: raise "
            f"{memory}, or use a GPU with more memory.",
        )
    return None


def _not_enough_free_memory(clues: Clues) -> StartUpFailure | None:
    match = clues.search(
        r"Free memory on device \S+ \(([\d.]+)/([\d.]+) GiB\) on startup is less than desired "
        r"GPU memory utilization \(([\d.]+)"
    )
    if match is None:
        return None
    var = variable_for("gpu_memory_utilization")
    free, total = float(match[1]), float(match[2])
    works = math.floor(free / total * 100) / 100 - 0.01 if total else 0.0
    return StartUpFailure(
        reason=Reason.OUT_OF_MEMORY,
        variable=var,
        message=f"{var}={match[3]} asks for more GPU memory than is free ({free:g} of "
        f"{total:g} GiB): set {var}={works:.2f} or less, or stop what else uses the GPU.",
    )


def _unsupported_architecture(clues: Clues) -> StartUpFailure | None:
    match = clues.search(r"Model architectures? (\[[^\]]*\]|\S+) (?:are|is) not supported")
    if match is None:
        return None
    import vllm

    return StartUpFailure(
        reason=Reason.UNSUPPORTED_ARCHITECTURE,
        variable=variable_for("model"),
        message=f"{clues.shown('model')} has the architecture {match[1]}, which vLLM "
        f"{vllm.__version__} does not support: choose a model of a supported architecture "
        f"({SUPPORTED_MODELS_URL}).",
    )


def _out_of_memory(clues: Clues) -> StartUpFailure | None:
    if not clues.search(r"OutOfMemoryError|CUDA out of memory|Cannot allocate memory|bad_alloc"):
        return None
    tp = variable_for("tensor_parallel_size")
    more = 2 * int(str(clues.arg("tensor_parallel_size") or 1))
    return StartUpFailure(
        reason=Reason.OUT_OF_MEMORY,
        variable=tp,
        message=f"The model did not fit in memory while loading: split it over more GPUs "
        f"({tp}={more}, with that many GPUs per worker), load it quantized "
        f"({variable_for('quantization')}=fp8), or use a GPU with more memory.",
    )


def _disk_full(clues: Clues) -> StartUpFailure | None:
    if not clues.search(r"No space left on device|\[Errno 28\]"):
        return None
    from huggingface_hub import constants

    return StartUpFailure(
        reason=Reason.DISK_FULL,
        variable="HF_HOME",
        message=f"The disk ran out of space while loading the model (the model cache is "
        f"{constants.HF_HUB_CACHE}): give the worker a larger disk or network volume, or set "
        "HF_HOME to a folder with room.",
    )


def _bad_lora_modules(clues: Clues) -> StartUpFailure | None:
    match = clues.search(r"Loading lora (\S+) failed")
    if match is None:
        return None
    var = variable_for("lora_modules")
    # vLLM's message hides the path (`<path>`); the settings have it.
    modules = clues.arg("lora_modules")
    paths = [
        getattr(module, "path", None)
        for module in (modules if isinstance(modules, list) else [])
        if getattr(module, "name", None) == match[1]
    ]
    where = f" at {paths[0]}" if paths else ""
    return StartUpFailure(
        reason=Reason.BAD_LORA_MODULES,
        variable=var,
        message=f"{var} names the adapter {match[1]}{where}, which could not be loaded: give "
        f"it an existing adapter folder or Hub id, or leave {var} blank.",
    )


def _tool_parser_missing(clues: Clues) -> StartUpFailure | None:
    match = clues.search(r"requires tool_parser:'([^']*)' which has not been registered")
    if match is None:
        return None
    parser, plugin = variable_for("tool_call_parser"), variable_for("tool_parser_plugin")
    if clues.arg("tool_parser_plugin"):
        message = (
            f"{parser}={match[1]} is not registered by {clues.shown('tool_parser_plugin')}: "
            f"check that the plugin defines that parser, or set {parser} to a parser vLLM has."
        )
    else:
        message = (
            f"{parser}={match[1]} is not a tool parser of this vLLM: set {plugin} to the "
            f"plugin file that defines it, or set {parser} to one vLLM has."
        )
    return StartUpFailure(reason=Reason.TOOL_PARSER_MISSING, variable=parser, message=message)


#: In order: the first rule that recognises the failure names it.
RULES: tuple[Callable[[Clues], StartUpFailure | None], ...] = (
    _known,
    _invalid_setting,
    _hub,
    _hub_in_output,
    _max_model_len_too_long,
    _kv_cache_too_small,
    _not_enough_free_memory,
    _unsupported_architecture,
    _bad_lora_modules,
    _tool_parser_missing,
    _disk_full,
    _out_of_memory,
)
