"""Where vLLM's compile cache goes: on the volume when it can take it, else vLLM's default."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple

from vllm_worker import volume
from vllm_worker.config import WorkerSettings


def test_a_writable_volume_with_room_takes_the_compile_cache(tmp_path):
    environ: dict[str, str] = {}
    chosen = volume.place_compile_cache(WorkerSettings(base_path=tmp_path), environ)
    assert chosen == tmp_path / "vllm-cache"
    assert chosen.is_dir() and not list(chosen.iterdir())  # the write check leaves nothing
    assert environ == {"VLLM_CACHE_ROOT": str(chosen)}


def test_no_volume_or_an_explicit_cache_root_leave_vllm_alone(tmp_path):
    environ: dict[str, str] = {}
    assert volume.place_compile_cache(WorkerSettings(), environ) is None
    explicit = WorkerSettings(base_path=tmp_path, vllm_cache_root=tmp_path / "mine")
    assert volume.place_compile_cache(explicit, environ) is None
    assert environ == {}
    assert not (tmp_path / "vllm-cache").exists()


def test_an_unwritable_volume_falls_back_with_a_warning(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    environ: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="vllm_worker.volume"):
        assert volume.place_compile_cache(WorkerSettings(base_path=blocker), environ) is None
    assert environ == {}
    assert f"{blocker / 'vllm-cache'} is not writable" in caplog.text
    assert "each new worker compiles again" in caplog.text


def test_a_nearly_full_volume_falls_back_with_a_warning(tmp_path, caplog, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage(10 * 2**30, 9 * 2**30, 2**29))
    environ: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="vllm_worker.volume"):
        assert volume.place_compile_cache(WorkerSettings(base_path=tmp_path), environ) is None
    assert environ == {}
    assert "has 0.5 GiB free, less than 2" in caplog.text
