"""Every setting of the worker, read once from the environment, without side effects.

Two kinds of settings live here, and this module is the single source the docs and the
console/Hub files are checked against:

* worker settings (`WorkerSettings`): concurrency, stream batching, OpenAI stream form, logs,
  the default model's cache;
* vLLM settings: every `vllm serve` option, named in UPPER_SNAKE case after its flag
  (`--max-model-len` -> `MAX_MODEL_LEN`). The list is read from vLLM's own argument parser,
  so it always matches the installed vLLM. Options that only concern vLLM's HTTP server
  (host, port, TLS, CORS, API keys, ...) are left out: the worker has no HTTP server.

The local endpoint's settings are in `local.settings`. Which model is served, and preparing
it, is the next step, in `model`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

logger = logging.getLogger(__name__)

#: Names users already know from RunPod's worker, mapped onto `vllm serve` flags.
ALIASES = {
    "MODEL_NAME": "--model",
    "MODEL_REVISION": "--revision",
    "TOKENIZER_NAME": "--tokenizer",
    "TOKENIZER_REVISION": "--tokenizer-revision",
    "OPENAI_RESPONSE_ROLE": "--response-role",
    "CUSTOM_CHAT_TEMPLATE": "--chat-template",
    "OPENAI_SERVED_MODEL_NAME_OVERRIDE": "--served-model-name",
}

#: Options of the `vllm serve` launcher itself (process layout, config file), not of a model.
_LAUNCHER_DESTS = {"model_tag", "headless", "api_server_count", "config", "grpc", "help"}

#: `--max-model-len` value that makes vLLM fit the longest context the KV cache holds.
AUTO_MAX_MODEL_LEN = -1

#: Share of RAM given to the KV cache on a machine without a GPU.
CPU_KV_CACHE_SHARE = 0.1


def cpu_defaults() -> dict[str, Any]:
    """Defaults that differ from vLLM's on a machine without a GPU."""
    import psutil
    import torch

    defaults: dict[str, Any] = {
        # CUDA graphs do not exist on CPU; compiling instead costs minutes at start-up.
        "enforce_eager": True,
        # vLLM's CPU default sizes the KV cache as a share of RAM minus the process's own
        # footprint, which leaves almost nothing on small machines: give it a fixed share.
        "kv_cache_memory_bytes": int(psutil.virtual_memory().total * CPU_KV_CACHE_SHARE),
    }
    if not torch.cpu._is_avx512_bf16_supported():
        # Without AVX512-BF16 (e.g. AVX2-only CPUs) bf16 matrix products are emulated: about
        # 4x slower than float32 on such a machine, which vLLM would still pick for bf16 models.
        defaults["dtype"] = "float32"
    return defaults


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


def setting(environ: Mapping[str, str], var: str) -> str | None:
    """The value of `var`, or None when it is unset, empty or blank: consoles send a field
    left blank as an empty value, which must mean "not set"."""
    value = environ.get(var)
    return value if value is not None and value.strip() else None


class ConfigError(Exception):
    """A setting has a value the worker cannot use; the message is one line for the user."""


class EnvSettings(BaseModel):
    """Settings read from environment variables named after their fields in upper case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def env_names(cls) -> list[str]:
        return [name.upper() for name in cls.model_fields]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Self:
        """The settings in `environ`; an empty or blank value means unset, as consoles send a
        field left blank. Raises `ConfigError` naming the first wrong variable."""
        values = {
            name: value
            for name in cls.model_fields
            if (value := setting(environ, name.upper())) is not None
        }
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            first = error.errors()[0]
            var = str(first["loc"][0]).upper()
            shown = _shown(var, str(first["input"]))
            raise ConfigError(f"{var}={shown}: {first['msg']}") from None


class WorkerSettings(EnvSettings):
    """Settings of the worker itself."""

    max_concurrency: int = Field(
        30, ge=1, description="Jobs one worker runs at once (the SDK's concurrency modifier)."
    )
    default_batch_size: int = Field(
        50, ge=1, description="Largest number of tokens per streamed batch (max_batch_size)."
    )
    default_min_batch_size: int = Field(
        1, ge=1, description="Tokens in the first streamed batch (min_batch_size)."
    )
    default_batch_size_growth_factor: float = Field(
        3.0, ge=1, description="Factor by which each streamed batch grows over the previous one."
    )
    raw_openai_output: bool = Field(
        True,
        description="Stream OpenAI jobs as vLLM's SSE text (true) or as lists of parsed chunks.",
    )
    max_batch_wait_ms: float = Field(
        0,
        ge=0,
        description="Send a streamed batch once its first token has waited this long, even if "
        "it is not full (0: off, batches keep their documented sizes).",
    )
    shutdown_grace_period: float = Field(
        30,
        ge=0,
        description="Seconds running jobs may take to finish after SIGTERM before they are "
        "cancelled; the worker then exits 0.",
    )
    runpod_log_level: Literal["NOTSET", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"] = Field(
        "INFO",
        description="Log level of the runpod SDK. The worker starts it at INFO: the SDK's own "
        "default, DEBUG, logs every prompt and streamed output.",
    )
    lora_load_on_demand: bool = Field(
        False,
        description="Let a job's `model` name a LoRA adapter that is not in LORA_MODULES: "
        "an absolute folder path or a hub id (downloaded into WORKER_CACHE_DIR/lora). It is "
        "loaded on first use and served like a configured one; the engine keeps the "
        "MAX_LORAS most recently used. Needs ENABLE_LORA=true.",
    )
    worker_cache_dir: Path | None = Field(
        None,
        description="Folder where the default model (served when MODEL_NAME is unset and no "
        "model is baked into the image) is prepared once. Unset: BASE_PATH/vllm-worker in the "
        "image, so a network volume keeps it; ~/.cache/vllm-worker elsewhere.",
    )

    base_path: Path | None = Field(
        None,
        description="Folder of RunPod's network volume; the image sets /runpod-volume. vLLM's "
        "compile cache is kept under it (BASE_PATH/vllm-cache) when it is writable and has "
        "2 GiB free, so the next worker on the volume starts without compiling again.",
    )
    vllm_cache_root: Path | None = Field(
        None,
        description="vLLM's own cache folder. Unset: BASE_PATH/vllm-cache when the volume "
        "can take it, else vLLM's default (~/.cache/vllm).",
    )

    @field_validator("runpod_log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    def cache_dir(self, xdg_cache_home: str | None = None) -> Path:
        """Cache root: `worker_cache_dir`, else `vllm-worker` under the XDG cache folder
        (`XDG_CACHE_HOME`, else ~/.cache, per the XDG Base Directory specification)."""
        if self.worker_cache_dir is not None:
            return self.worker_cache_dir.expanduser()
        root = Path(xdg_cache_home) if xdg_cache_home else Path.home() / ".cache"
        return root / "vllm-worker"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything start-up needs: worker settings and the `vllm serve` namespace."""

    worker: WorkerSettings
    vllm_args: argparse.Namespace
    #: Parser destinations (`model`, `max_model_len`, ...) the environment set.
    given: frozenset[str]
    #: The CPU defaults applied because the environment did not set them.
    cpu_defaults: dict[str, Any]

    @property
    def served_model_name(self) -> str:
        """The name responses carry: the first served model name, else the model."""
        names = self.vllm_args.served_model_name
        return str(names[0] if names else self.vllm_args.model)


class _Parser:
    """vLLM's `vllm serve` parser, raising `ConfigError` instead of exiting the process."""

    def __init__(self) -> None:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        class Raising(FlexibleArgumentParser):
            def error(self, message: str) -> NoReturn:
                raise ConfigError(message)

        self.parser = make_arg_parser(Raising())

    def parse(self, argv: list[str]) -> argparse.Namespace:
        return self.parser.parse_args(argv)


@functools.cache
def _parser() -> _Parser:
    return _Parser()


def _server_only_dests() -> set[str]:
    from vllm.entrypoints.launchers.cli_args import BaseFrontendArgs, FrontendArgs

    def names(cls: type) -> set[str]:
        return {field.name for field in dataclasses.fields(cls)}

    return names(FrontendArgs) - names(BaseFrontendArgs)


@functools.cache
def vllm_env_vars() -> dict[str, argparse.Action]:
    """Environment variable -> vLLM parser action, for every option the worker accepts."""
    excluded = _server_only_dests() | _LAUNCHER_DESTS
    mapping: dict[str, argparse.Action] = {}
    for action in _parser().parser._actions:
        if action.dest in excluded:
            continue
        for flag in action.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-"):
                mapping[flag[2:].replace("-", "_").upper()] = action
    for alias, flag in ALIASES.items():
        mapping[alias] = next(a for a in mapping.values() if flag in a.option_strings)
    return mapping


@functools.cache
def flag_variables() -> dict[str, str]:
    """`vllm serve` flag (`--tool-call-parser`) -> the variable a worker user sets for it.

    Where RunPod's worker gave a flag another name (`ALIASES`), that name wins.
    """
    names = {flag: var for var, flag in ALIASES.items()}
    for var, action in vllm_env_vars().items():
        for flag in action.option_strings:
            if flag.startswith("--") and not flag.startswith("--no-"):
                names.setdefault(flag, var)
    return names


@functools.cache
def variable_for(dest: str) -> str:
    """The variable that sets vLLM's parser destination `dest` (`max_model_len` ->
    `MAX_MODEL_LEN`, `model` -> `MODEL_NAME`): `flag_variables` for the destination's flag."""
    for action in vllm_env_vars().values():
        if action.dest == dest:
            flag = next(s for s in action.option_strings if s.startswith("--"))
            return flag_variables()[flag]
    return dest.upper()


def _shown(var: str, value: str) -> str:
    return "<hidden>" if any(m in var for m in _SECRET_MARKERS) else repr(value)


def _to_argv(var: str, value: str, action: argparse.Action) -> list[str]:
    """One environment variable as `vllm serve` arguments."""
    flag = next(s for s in action.option_strings if s.startswith("--"))
    if action.nargs == 0:  # a switch: store_true or --flag/--no-flag
        word = value.strip().lower()
        if word in _TRUE:
            return [flag]
        if word in _FALSE:
            negative = f"--no-{flag[2:]}"
            return [negative] if negative in action.option_strings else []
        raise ConfigError(f"{var}={_shown(var, value)}: expected true or false")
    if action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction):
        items = _list_items(var, value)
        if isinstance(action, argparse._AppendAction):
            return [part for item in items for part in (flag, item)]
        return [flag, *items]
    return [flag, value]


def _list_items(var: str, value: str) -> list[str]:
    """A list setting: a JSON list (or one JSON object), else whitespace-separated words."""
    text = value.strip()
    if text[:1] in "[{":
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{var}={_shown(var, value)}: malformed JSON ({error})") from None
        items = parsed if isinstance(parsed, list) else [parsed]
        return [item if isinstance(item, str) else json.dumps(item) for item in items]
    return text.split()


def vllm_argv(environ: Mapping[str, str]) -> list[str]:
    """The `vllm serve` arguments set by the environment, each checked on its own.

    Checking one variable at a time lets an error name the variable that caused it.
    """
    argv: list[str] = []
    for var, action in vllm_env_vars().items():
        value = setting(environ, var)
        if value is None:
            continue
        args = _to_argv(var, value, action)
        try:
            _parser().parse(args)
        except ConfigError as error:
            raise ConfigError(f"{var}={_shown(var, value)}: {error}") from None
        argv += args
    return argv


def _check_serve_args(args: argparse.Namespace) -> None:
    """vLLM's own cross-option checks of `vllm serve` (chat template, tool choice, ...).

    `vllm serve` runs them before loading the model; so do we, so that a bad combination
    stops start-up instead of failing every OpenAI job. Flags in the message are given as
    the variables that set them.
    """
    from vllm.entrypoints.launchers.cli_args import validate_parsed_serve_args
    from vllm.exceptions import VLLMError

    try:
        validate_parsed_serve_args(args)
    except (TypeError, ValueError, OSError, VLLMError) as error:
        message = re.sub(
            r"--([a-z0-9-]+)",
            lambda m: m[1].replace("-", "_").upper(),
            str(error).removeprefix("Error: "),
        )
        if parameter := getattr(error, "parameter", None):
            message = f"{parameter.upper()}: {message}"
        raise ConfigError(message) from None


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def load(environ: Mapping[str, str] = os.environ) -> Config:
    """Read and check every setting; raise `ConfigError` with one clear line if one is wrong.

    Reads only: the model is chosen and prepared afterwards (`model.prepare`).
    """
    worker = WorkerSettings.from_env(environ)
    argv = vllm_argv(environ)
    args = _parser().parse(argv)
    _check_serve_args(args)
    given = frozenset(
        action.dest for var, action in vllm_env_vars().items() if setting(environ, var) is not None
    )
    if "max_model_len" not in given:
        # vLLM's auto-fit: the model's whole context when the KV cache holds it, else the
        # longest length it does hold (`engine.warn_if_context_cut` says so), not a failed start.
        args.max_model_len = AUTO_MAX_MODEL_LEN
    applied: dict[str, Any] = {}
    if _is_cpu():
        overridden = set(given)
        if "gpu_memory_utilization" in given:  # the user sized the cache their own way
            overridden.add("kv_cache_memory_bytes")
        applied = {k: v for k, v in cpu_defaults().items() if k not in overridden}
        for key, value in applied.items():
            setattr(args, key, value)
    return Config(worker=worker, vllm_args=args, given=given, cpu_defaults=applied)


def engine_args(config: Config) -> AsyncEngineArgs:
    """The engine arguments of a loaded configuration."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs.from_cli_args(config.vllm_args)
