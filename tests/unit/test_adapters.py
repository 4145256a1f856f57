"""Which adapter a job's `model` names, on vLLM's real served-model registry with a stand-in
engine client (it records the adapters it is asked to load; the engine tests load real ones)."""

from __future__ import annotations

import argparse
import asyncio
import json
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import pytest

from vllm_worker import adapters
from vllm_worker.adapters import AdapterError, OnDemandResolver
from vllm_worker.config import Config, WorkerSettings
from vllm_worker.native_input import parse_native

BASE = "acme/base-model"


class Engine:
    """The parts of an engine client `OpenAIServingModels` uses; `add_lora` records."""

    def __init__(self, folder: Path, lora: bool = True) -> None:
        self.model_config = SimpleNamespace(model=str(folder), max_model_len=512)
        self.vllm_config = SimpleNamespace(lora_config=object() if lora else None)
        self.renderer = self.input_processor = None
        self.loaded: list[str] = []

    async def add_lora(self, request) -> bool:
        self.loaded.append(request.lora_path)
        return True


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    return folder


@pytest.fixture
def resolver(model_folder, tmp_path):
    """The worker's resolver, registered with vLLM for the test only."""
    from vllm.lora.resolver import LoRAResolverRegistry

    resolver = OnDemandResolver(
        frozenset({BASE, str(model_folder)}), max_rank=8, downloads=tmp_path / "downloads"
    )
    LoRAResolverRegistry.register_resolver(adapters.RESOLVER_NAME, resolver)
    yield resolver
    LoRAResolverRegistry.resolvers.pop(adapters.RESOLVER_NAME, None)


def serving_models(engine: Engine, configured: dict[str, str] | None = None):
    """vLLM's registry on `engine`, serving `BASE` and the `configured` adapters."""
    from vllm.entrypoints.openai.models.protocol import BaseModelPath
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.lora.request import LoRARequest

    models = OpenAIServingModels(engine, [BaseModelPath(BASE, engine.model_config.model)])
    for i, (name, path) in enumerate((configured or {}).items(), start=1):
        models.lora_requests[name] = LoRARequest(name, i, path)
    return models


def adapter(folder: Path, base: str = BASE, rank: int = 8, peft_type: str = "LORA") -> Path:
    """An adapter folder as peft writes it (its weights are not needed here)."""
    folder.mkdir(parents=True)
    settings = {"peft_type": peft_type, "r": rank, "base_model_name_or_path": base}
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    return folder


def resolve(models, name: str | None, on_demand: bool = True):
    return asyncio.run(adapters.lora_request(models, name, on_demand))


def refusal(models, name: str, on_demand: bool = True) -> AdapterError:
    with pytest.raises(AdapterError) as raised:
        resolve(models, name, on_demand)
    return raised.value


@pytest.mark.parametrize("name", [None, "", BASE])
def test_no_name_or_the_base_name_is_the_base_model(model_folder, name):
    assert resolve(serving_models(Engine(model_folder)), name) is None


def test_a_configured_adapter_is_found_by_name(model_folder):
    models = serving_models(Engine(model_folder), {"sql": "/adapters/sql"})
    assert resolve(models, "sql", on_demand=False).lora_path == "/adapters/sql"


def test_an_unknown_name_lists_the_served_names(model_folder):
    models = serving_models(Engine(model_folder), {"sql": "/adapters/sql"})
    error = refusal(models, "nope", on_demand=False)
    assert str(error) == f"model: 'nope' is not served; served: {BASE}, sql"
    assert error.status == HTTPStatus.NOT_FOUND and error.err_type == "NotFoundError"
    # With the setting on, a plain name is still no adapter to load: the same answer.
    assert str(refusal(models, "nope")) == str(error)


@pytest.mark.parametrize("name", ["/adapters/new", "~/new", "acme/some-adapter"])
def test_a_path_or_hub_id_names_the_setting_when_it_is_off(model_folder, name):
    error = refusal(serving_models(Engine(model_folder)), name, on_demand=False)
    assert error.reason == (
        f"{name!r} is not served; served: {BASE} "
        "(set LORA_LOAD_ON_DEMAND=true to load an adapter by folder path or hub id)"
    )


def test_on_demand_loads_an_adapter_folder_once_and_serves_it_by_its_path(
    model_folder, tmp_path, resolver
):
    engine = Engine(model_folder)
    models = serving_models(engine)
    folder = adapter(tmp_path / "adapter")
    first = resolve(models, str(folder))
    assert (first.lora_name, first.lora_path) == (str(folder), str(folder))
    assert resolve(models, str(folder)) is first  # known from now on, not loaded again
    assert engine.loaded == [str(folder)]
    listed = asyncio.run(models.show_available_models())
    assert [card.id for card in listed.data] == [BASE, str(folder)]


@pytest.mark.parametrize("declared", [BASE, f"{BASE}/", "{folder}", "{folder}/", "{link}"])
def test_an_adapter_for_the_served_model_by_name_or_folder_is_accepted(
    model_folder, tmp_path, resolver, declared
):
    link = tmp_path / "link"
    link.symlink_to(model_folder)
    base = declared.format(folder=model_folder, link=link)
    folder = adapter(tmp_path / "adapter", base=base)
    assert resolve(serving_models(Engine(model_folder)), str(folder)).lora_path == str(folder)


def test_an_adapter_for_another_model_is_refused_naming_both(model_folder, tmp_path, resolver):
    engine = Engine(model_folder)
    folder = adapter(tmp_path / "adapter", base="acme/other-model")
    error = refusal(serving_models(engine), str(folder))
    assert error.reason == (
        f"{str(folder)!r} is an adapter for 'acme/other-model', not for the served model "
        f"({', '.join(sorted({BASE, str(model_folder)}))})"
    )
    assert error.status == HTTPStatus.BAD_REQUEST and engine.loaded == []


def test_a_rank_above_max_lora_rank_is_refused(model_folder, tmp_path, resolver):
    folder = adapter(tmp_path / "adapter", rank=16)
    error = refusal(serving_models(Engine(model_folder)), str(folder))
    assert error.reason == f"{str(folder)!r} has rank 16, above MAX_LORA_RANK=8"


def test_another_peft_type_is_refused(model_folder, tmp_path, resolver):
    folder = adapter(tmp_path / "adapter", peft_type="IA3")
    error = refusal(serving_models(Engine(model_folder)), str(folder))
    assert error.reason == f"{str(folder)!r} is a IA3 adapter; only LoRA is served"


def test_a_missing_folder_or_one_without_adapter_config_is_refused(
    model_folder, tmp_path, resolver
):
    models = serving_models(Engine(model_folder))
    missing = tmp_path / "missing"
    assert refusal(models, str(missing)).reason == f"{str(missing)!r}: no such folder"
    assert refusal(models, str(model_folder)).reason == (
        f"{str(model_folder)!r} has no adapter_config.json: not a peft adapter folder"
    )


def test_on_demand_without_enable_lora_names_it(model_folder, tmp_path, resolver):
    folder = adapter(tmp_path / "adapter")
    error = refusal(serving_models(Engine(model_folder, lora=False)), str(folder))
    assert error.reason == f"{str(folder)!r} is not served, and adapters need ENABLE_LORA=true"


def test_an_adapter_the_engine_cannot_load_fails_naming_it(model_folder, tmp_path, resolver):
    engine = Engine(model_folder)

    async def refuse(request) -> bool:
        raise RuntimeError("bad weights")

    engine.add_lora = refuse  # type: ignore[method-assign]
    folder = adapter(tmp_path / "adapter")
    error = refusal(serving_models(engine), str(folder))
    assert error.reason == (
        f"{str(folder)!r} was found but the engine could not load it (the worker's log says why)"
    )
    assert error.status == HTTPStatus.BAD_REQUEST


def test_a_hub_id_that_cannot_be_downloaded_fails_naming_it(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(AdapterError) as raised:
        adapters.download("acme/no-such-adapter", tmp_path, adapters.ADAPTER_FILES)
    assert raised.value.reason.startswith("'acme/no-such-adapter' could not be downloaded: ")


def test_register_accepts_the_served_names_and_the_model_folder(model_folder, tmp_path):
    from vllm.lora.resolver import LoRAResolverRegistry

    args = argparse.Namespace(model=str(model_folder), served_model_name=[BASE], max_lora_rank=4)
    worker = WorkerSettings(worker_cache_dir=tmp_path / "cache")
    try:
        adapters.register(Config(worker, args, frozenset(), {}))
        resolver = LoRAResolverRegistry.get_resolver(adapters.RESOLVER_NAME)
    finally:
        LoRAResolverRegistry.resolvers.pop(adapters.RESOLVER_NAME, None)
    assert isinstance(resolver, OnDemandResolver)
    assert resolver.bases == {BASE, str(model_folder), str(model_folder.resolve())}
    assert resolver.max_rank == 4
    assert resolver.downloads == tmp_path / "cache" / "lora"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("/a/b", True), ("~/a", True), ("acme/x-1.0", True), ("plain", False), ("a/b/c", False)],
)
def test_loadable_names(name, expected):
    assert adapters.loadable(name) is expected


def test_native_model_field_is_a_string():
    assert parse_native({"prompt": "Hi", "model": "sql"}).model == "sql"
    assert parse_native({"prompt": "Hi", "model": None}).model is None
    with pytest.raises(Exception, match="model"):
        parse_native({"prompt": "Hi", "model": 3})


def test_the_setting_is_off_unless_set():
    assert WorkerSettings.from_env({}).lora_load_on_demand is False
    assert WorkerSettings.from_env({"LORA_LOAD_ON_DEMAND": "true"}).lora_load_on_demand is True


@pytest.fixture
def hub(fake_hub, monkeypatch):
    """huggingface_hub pointed at the fake hub (it reads HF_ENDPOINT once, on import), with no
    token of this shell."""
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", fake_hub)
    template = fake_hub + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return fake_hub


def test_a_hub_adapter_is_checked_before_its_weights_are_downloaded(
    hub, model_folder, tmp_path, resolver
):
    """Through the real hub client: the config comes first, the weights only for an adapter
    of the served model, and nothing else of the repository (its README stays behind)."""
    from tests import fake_hub

    assert fake_hub.ADAPTER_BASE == BASE
    engine = Engine(model_folder)
    models = serving_models(engine)
    snapshots = tmp_path / "downloads" / "models--acme--{}" / "snapshots" / fake_hub.COMMIT

    error = refusal(models, fake_hub.OTHER_ADAPTER)
    assert error.reason.startswith(
        f"{fake_hub.OTHER_ADAPTER!r} is an adapter for 'acme/other-model'"
    )
    other = Path(str(snapshots).format("other-lora-adapter"))
    assert sorted(path.name for path in other.iterdir()) == ["adapter_config.json"]

    loaded = resolve(models, fake_hub.ADAPTER)
    folder = Path(str(snapshots).format("lora-adapter"))
    assert (loaded.lora_name, loaded.lora_path) == (fake_hub.ADAPTER, str(folder))
    assert sorted(path.name for path in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (folder / "adapter_model.safetensors").read_bytes() == b"stand-in weights"
    assert engine.loaded == [str(folder)]


def test_a_missing_hub_repository_fails_naming_it(hub, model_folder, resolver):
    error = refusal(serving_models(Engine(model_folder)), "acme/no-such-adapter")
    assert error.reason == (
        "'acme/no-such-adapter' is not a repository on the hub (a private one needs HF_TOKEN)"
    )
    assert error.status == HTTPStatus.NOT_FOUND


def test_a_gated_hub_repository_asks_for_hf_token(hub, model_folder, resolver):
    from tests import fake_hub

    error = refusal(serving_models(Engine(model_folder)), fake_hub.GATED)
    assert (
        error.reason == f"{fake_hub.GATED!r} is gated: accept its terms on the hub and set HF_TOKEN"
    )
    assert error.err_type == "PermissionDeniedError"
