"""Which LoRA adapter a job's `model` names, for native and OpenAI jobs alike.

The answer comes from vLLM's own served-model registry (`OpenAIServingModels`, the one its
OpenAI routes use): its base model names, its adapters (`LORA_MODULES` and those loaded since)
and its `resolve_lora`, which asks the LoRA resolvers registered with vLLM and loads what one
finds into the engine. The engine keeps at most `MAX_LORAS` adapters per batch and
`MAX_CPU_LORAS` (default: `MAX_LORAS`) in memory, evicting the least recently used; an evicted
adapter is loaded again from its folder when a job names it.

With `LORA_LOAD_ON_DEMAND`, `OnDemandResolver` lets a job name an adapter that is not
configured: a local folder (an absolute path) or a hub id, downloaded into the worker cache.
vLLM's file-system resolver would refuse most of them: it accepts only an adapter whose
`base_model_name_or_path` is the served model's path, while adapters trained on a hub model
name its hub id, under which the default model and a baked model are served from a folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from vllm_worker.errors import JobInputError

if TYPE_CHECKING:
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.lora.request import LoRARequest
    from vllm.lora.resolver import LoRAResolver

    from vllm_worker.config import Config

#: The worker setting that turns on loading adapters a job names (see `config.WorkerSettings`).
SETTING = "LORA_LOAD_ON_DEMAND"
#: The name `OnDemandResolver` is registered under in vLLM's `LoRAResolverRegistry`.
RESOLVER_NAME = "vllm-worker on demand"
#: What `download` takes of an adapter's hub repository: its config, to check it, then the
#: files vLLM's LoRA loader reads (`vllm/lora/lora_model.py`: the weights, as safetensors,
#: .bin or .pt).
CONFIG_FILES = ["adapter_config.json"]
ADAPTER_FILES = [*CONFIG_FILES, "adapter_model.*"]
#: A hub repository id, `owner/name` (the hub's own rule for the characters allowed).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


class AdapterError(JobInputError):
    """A job's `model` names no servable model or adapter; `reason` is without the field."""

    def __init__(self, reason: str, status: HTTPStatus = HTTPStatus.NOT_FOUND) -> None:
        super().__init__(f"model: {reason}")
        self.reason = reason
        self.status = status

    @property
    def err_type(self) -> str:
        """vLLM's name for the error's kind, for OpenAI error bodies."""
        return {
            HTTPStatus.NOT_FOUND: "NotFoundError",
            HTTPStatus.FORBIDDEN: "PermissionDeniedError",
        }.get(self.status, "BadRequestError")


def loadable(name: str) -> bool:
    """Whether `name` can only mean an adapter to load: an absolute path or a hub id."""
    return name.startswith(("/", "~")) or _HUB_ID.fullmatch(name) is not None


async def lora_request(
    models: OpenAIServingModels, name: str | None, on_demand: bool
) -> LoRARequest | None:
    """The adapter `name` selects, or None for the base model (`name` unset, empty or a served
    base model name).

    With `on_demand`, an adapter that is not loaded yet is resolved and loaded by vLLM
    (`OpenAIServingModels.resolve_lora`, through `OnDemandResolver`), once: later jobs find it
    loaded. Raises `AdapterError` naming the served names when `name` is not served.
    """
    from vllm import envs
    from vllm.lora.request import LoRARequest

    if not name or models.is_base_model(name):  # vLLM's OpenAI routes read "" as unset too
        return None
    known = models.lora_requests.get(name)
    if known is not None:
        return known
    if not (on_demand and loadable(name)):
        if envs.VLLM_SKIP_MODEL_NAME_VALIDATION:  # vLLM then serves any name as the base
            return None
        raise AdapterError(_not_served(models, name, on_demand))
    if models.engine_client.vllm_config.lora_config is None:
        raise AdapterError(
            f"{name!r} is not served, and adapters need ENABLE_LORA=true",
            HTTPStatus.BAD_REQUEST,
        )
    result = await models.resolve_lora(name)
    if isinstance(result, LoRARequest):
        return result
    if result.error.code == HTTPStatus.BAD_REQUEST:  # vLLM logged why; its message hides paths
        raise AdapterError(
            f"{name!r} was found but the engine could not load it (the worker's log says why)",
            HTTPStatus.BAD_REQUEST,
        )
    raise AdapterError(_not_served(models, name, on_demand))  # no resolver knew the name


def _not_served(models: OpenAIServingModels, name: str, on_demand: bool) -> str:
    served = [base.name for base in models.base_model_paths] + list(models.lora_requests)
    reason = f"{name!r} is not served; served: {', '.join(served)}"
    if not on_demand and loadable(name):
        reason += f" (set {SETTING}=true to load an adapter by folder path or hub id)"
    return reason


def register(config: Config) -> None:
    """Register `OnDemandResolver` for the model `config` serves, process-wide, with vLLM.

    Must run before the serving state is built: vLLM's registry of served models takes the
    resolvers registered when it is created.
    """
    from vllm.lora.resolver import LoRAResolverRegistry

    args = config.vllm_args
    bases = {str(args.model), *(args.served_model_name or ())}
    if os.path.isdir(args.model):
        bases.add(os.path.realpath(args.model))
    downloads = config.worker.cache_dir(os.environ.get("XDG_CACHE_HOME")) / "lora"
    resolver = OnDemandResolver(frozenset(bases), args.max_lora_rank, downloads)
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, cast("LoRAResolver", resolver))


class OnDemandResolver:
    """Finds the adapter a job names by absolute folder path or hub id, for vLLM to load.

    It has the interface of vLLM's `LoRAResolver` (`resolve_lora`) without subclassing it, so
    that importing this module does not import vLLM (and torch).

    An adapter is accepted when its `adapter_config.json` says LoRA, its rank fits
    `MAX_LORA_RANK`, and its `base_model_name_or_path` is one of the served model's names or
    its folder. Anything else raises `AdapterError` saying which of these failed; a name that
    is neither a path nor a hub id is left to other resolvers (returns None).
    """

    def __init__(self, bases: frozenset[str], max_rank: int, downloads: Path) -> None:
        self.bases = bases
        self.max_rank = max_rank
        self.downloads = downloads

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        from vllm.lora.request import LoRARequest

        if not loadable(lora_name):
            return None
        if lora_name.startswith(("/", "~")):
            folder = Path(lora_name).expanduser()
            self._check(adapter_config(folder, lora_name), lora_name, base_model_name)
        else:  # a hub id
            # The config alone first: a repository that is no adapter for this model (a whole
            # model, say) is refused before anything large is downloaded.
            folder = await asyncio.to_thread(download, lora_name, self.downloads, CONFIG_FILES)
            self._check(adapter_config(folder, lora_name), lora_name, base_model_name)
            await asyncio.to_thread(download, lora_name, self.downloads, ADAPTER_FILES)
        # vLLM's `resolve_lora` replaces the id with one unique to this worker.
        return LoRARequest(lora_name=lora_name, lora_int_id=1, lora_path=str(folder))

    def _check(self, settings: dict[str, Any], name: str, served_path: str) -> None:
        if settings.get("peft_type") != "LORA":
            raise AdapterError(
                f"{name!r} is a {settings.get('peft_type')} adapter; only LoRA is served",
                HTTPStatus.BAD_REQUEST,
            )
        rank = settings.get("r")
        if isinstance(rank, int) and rank > self.max_rank:
            raise AdapterError(
                f"{name!r} has rank {rank}, above MAX_LORA_RANK={self.max_rank}",
                HTTPStatus.BAD_REQUEST,
            )
        base = settings.get("base_model_name_or_path")
        if not same_model(base, self.bases | {served_path}):
            raise AdapterError(
                f"{name!r} is an adapter for {base!r}, not for the served model "
                f"({', '.join(sorted(self.bases))})",
                HTTPStatus.BAD_REQUEST,
            )


def same_model(declared: object, names: frozenset[str]) -> bool:
    """Whether an adapter's declared base model is one of `names` (a trailing slash or, for
    folders, another path to the same folder makes no difference)."""
    if not isinstance(declared, str) or not declared:
        return False
    stripped = declared.rstrip("/")
    if stripped in {name.rstrip("/") for name in names}:
        return True
    return os.path.isdir(stripped) and os.path.realpath(stripped) in names


def adapter_config(folder: Path, name: str) -> dict[str, Any]:
    """The adapter's `adapter_config.json` (as peft's `save_pretrained` writes it), or
    `AdapterError` saying what is missing."""
    if not folder.is_dir():
        raise AdapterError(f"{name!r}: no such folder")
    path = folder / "adapter_config.json"
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterError(
            f"{name!r} has no adapter_config.json: not a peft adapter folder",
            HTTPStatus.BAD_REQUEST,
        ) from None
    except (OSError, ValueError) as error:
        raise AdapterError(f"{name!r}: unreadable {path.name} ({error})") from None
    if not isinstance(settings, dict):
        raise AdapterError(f"{name!r}: {path.name} is not a JSON object", HTTPStatus.BAD_REQUEST)
    return settings


def download(repo_id: str, downloads: Path, files: list[str]) -> Path:
    """The `files` (glob patterns) of the hub repository `repo_id`, downloaded into
    `downloads` (and kept: under a network volume, the next worker finds them); the folder of
    the repository's snapshot, or `AdapterError`."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, cache_dir=downloads, allow_patterns=files))
    except GatedRepoError:
        raise AdapterError(
            f"{repo_id!r} is gated: accept its terms on the hub and set HF_TOKEN",
            HTTPStatus.FORBIDDEN,
        ) from None
    except RepositoryNotFoundError:
        raise AdapterError(
            f"{repo_id!r} is not a repository on the hub (a private one needs HF_TOKEN)"
        ) from None
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise AdapterError(f"{repo_id!r} could not be downloaded: {first_line}") from None
