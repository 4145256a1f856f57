"""Checks before any download or engine start, so a typo fails in seconds, not after a slow start.

Local paths (the model and tokenizer folders, the tool-parser plugin file) must exist. A model
(and a separate tokenizer) on the Hugging Face Hub must exist, be readable with the given
token and have the given revision: the Hub shows a gated repository's metadata to anyone, so
one of its files is asked for instead (a HEAD, `get_hf_file_metadata`), which tells all three
apart (`hf_raise_for_status` in huggingface_hub's `utils/_http.py`). The Hub checks are skipped
offline (`HF_HUB_OFFLINE`, which a baked model sets) and for models on other sources; a failure
of the check itself (network, timeout, server error) is logged and let through, since the
download may still work.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

from vllm_worker.config import Config, setting, variable_for
from vllm_worker.startup_failure import Reason, StartUpError, StartUpFailure, hub_failure

logger = logging.getLogger(__name__)

#: Seconds the Hub gets to answer one check.
TIMEOUT_S = 10.0
#: A file every model repository of a transformers model has; its absence is no failure.
PROBE_FILE = "config.json"
#: A Hub repository id: `name` or `owner/name` (huggingface_hub's `validate_repo_id` rules).
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def check(config: Config, environ: Mapping[str, str] = os.environ) -> None:
    """Raise `StartUpError` when the model, tokenizer or tool-parser plugin cannot be found."""
    args = config.vllm_args
    _check_plugin(args.tool_parser_plugin)
    repos = [("model", str(args.model), args.revision)]
    if args.tokenizer and args.tokenizer != args.model:
        repos.append(("tokenizer", str(args.tokenizer), args.tokenizer_revision))
    for dest, name, revision in repos:
        if _local(name):
            _check_folder(dest, name)
        elif _hub_checked(environ):
            check_hub_repo(name, revision, tokenizer=dest == "tokenizer", environ=environ)


def _local(name: str) -> bool:
    return os.path.exists(name) or not _REPO_ID.match(name)


def _hub_checked(environ: Mapping[str, str]) -> bool:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _true(setting(environ, "HF_HUB_OFFLINE")):
        return False
    # vLLM downloads from ModelScope instead when asked to (vllm/envs.py).
    return not _true(setting(environ, "VLLM_USE_MODELSCOPE"))


def _true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _check_folder(dest: str, name: str) -> None:
    if os.path.isdir(name) or "://" in name:  # a folder, or a URL a model loader reads
        return
    var = variable_for(dest)
    raise StartUpError(
        StartUpFailure(
            reason=Reason.MODEL_NOT_FOUND,
            variable=var,
            message=f"{var}={name} is neither a folder on this machine nor a Hugging Face Hub "
            "id: give an existing model folder, or a Hub id such as "
            "HuggingFaceTB/SmolLM2-135M-Instruct.",
        )
    )


def _check_plugin(plugin: str | None) -> None:
    """vLLM imports the plugin as a module, else as a file (`vllm/utils/import_utils.py`)."""
    if not plugin or Path(plugin).is_file():
        return
    try:
        if importlib.util.find_spec(plugin) is not None:
            return
    except (ImportError, ValueError):
        pass
    var = variable_for("tool_parser_plugin")
    raise StartUpError(
        StartUpFailure(
            reason=Reason.TOOL_PARSER_MISSING,
            variable=var,
            message=f"{var}={plugin} is neither a Python file on this machine nor an "
            f"importable module: give the path of the plugin's .py file, or leave {var} blank.",
        )
    )


def check_hub_repo(
    name: str, revision: str | None, tokenizer: bool, environ: Mapping[str, str] = os.environ
) -> None:
    """Ask the Hub for one file of `name` at `revision`, with the token huggingface_hub finds
    (`HF_TOKEN`); raise `StartUpError` when the Hub refuses the repository or revision."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    # The endpoint as `environ` has it (huggingface_hub reads HF_ENDPOINT once, on import).
    url = hf_hub_url(name, PROBE_FILE, revision=revision, endpoint=setting(environ, "HF_ENDPOINT"))
    try:
        get_hf_file_metadata(url, timeout=TIMEOUT_S)
    except EntryNotFoundError:
        return  # the repository and revision exist and are readable
    except Exception as error:
        token_set = setting(environ, "HF_TOKEN") is not None
        failure = hub_failure(error, name, tokenizer, token_set)
        if failure is None:
            logger.warning(
                "could not check %s on the Hugging Face Hub (%s); trying to load it anyway",
                name,
                type(error).__name__,
            )
            return
        raise StartUpError(failure) from error
