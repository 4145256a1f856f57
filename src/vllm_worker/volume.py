"""What outlives a container goes on RunPod's network volume, when the worker has one.

vLLM compiles the model's graphs (torch.compile, CUDA graphs) at every cold start unless it
finds them in its cache folder, `VLLM_CACHE_ROOT` (default ~/.cache/vllm, inside the container).
On the volume, the next worker on the same volume starts from the cache instead. A volume that
cannot be written, or is nearly full, is not used: a compile cache that fails to save must not
fail the start.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

from vllm_worker.config import WorkerSettings

logger = logging.getLogger(__name__)

#: The compile cache's folder under BASE_PATH.
COMPILE_CACHE_FOLDER = "vllm-cache"
#: Free space the volume needs before the compile cache goes there (compiled graphs of a large
#: model take hundreds of megabytes).
MIN_FREE_BYTES = 2 * 2**30


def place_compile_cache(
    settings: WorkerSettings, environ: MutableMapping[str, str] = os.environ
) -> Path | None:
    """Point vLLM's cache (`VLLM_CACHE_ROOT` in `environ`, which the engine's processes
    inherit) at BASE_PATH/vllm-cache when BASE_PATH is set, writable and has room.

    Returns the folder chosen, or None when vLLM keeps its own default (no BASE_PATH, an
    explicit VLLM_CACHE_ROOT, or a volume it cannot use, which is logged as a warning).
    """
    if settings.vllm_cache_root is not None or settings.base_path is None:
        return None
    folder = settings.base_path / COMPILE_CACHE_FOLDER
    problem = _unusable(folder)
    if problem is not None:
        logger.warning(
            "vLLM's compile cache stays in its default folder, so each new worker compiles "
            "again: %s (BASE_PATH=%s)",
            problem,
            settings.base_path,
        )
        return None
    environ["VLLM_CACHE_ROOT"] = str(folder)
    logger.info("vLLM's compile cache is kept on the volume, in %s", folder)
    return folder


def _unusable(folder: Path) -> str | None:
    """Why the compile cache cannot go in `folder`, or None if it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
        free = shutil.disk_usage(folder).free
    except OSError as error:
        return f"{folder} is not writable ({error.strerror or error})"
    if free < MIN_FREE_BYTES:
        return f"{folder} has {free / 2**30:.1f} GiB free, less than {MIN_FREE_BYTES / 2**30:.0f}"
    return None
