"""The warm start on CPU: one engine-core process, forked from the worker and bound to the
cores vLLM gives a model runner, answers correctly behind the local endpoint."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest

from vllm_worker.local.testing import LocalEndpoint

QUESTION = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "sampling_params": {"temperature": 0, "max_tokens": 12},
}


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[LocalEndpoint]:
    log = tmp_path_factory.mktemp("warm") / "endpoint.log"
    with LocalEndpoint(log) as started:
        started.wait_ready()
        yield started


def engine_core(worker: psutil.Process) -> psutil.Process:
    cores = [p for p in worker.children(recursive=True) if p.name().startswith("VLLM::")]
    assert len(cores) == 1, [p.name() for p in cores]  # no separate model-runner process
    assert "EngineCore" in cores[0].name()
    return cores[0]


def test_the_engine_core_is_forked_and_bound_to_vllms_model_runner_cores(endpoint):
    worker = endpoint.worker()
    core = engine_core(worker)
    # vLLM's own choice of cores for the model runner, as its CPU platform logs it.
    chosen = endpoint.wait_log(r"local_rank=0, core ids=\[([\d, ]+)\]", timeout_s=5)
    expected = {int(cpu) for cpu in chosen[1].split(",")}
    threads = {thread.id: os.sched_getaffinity(thread.id) for thread in core.threads()}
    assert threads and all(cpus == expected for cpus in threads.values()), threads
    if len(os.sched_getaffinity(0)) > 1:
        assert expected < set(os.sched_getaffinity(worker.pid))  # the other cores stay free
    # A spawned engine core is a new program, started with vLLM's OpenMP variables in its
    # environment; a forked one kept the worker's, which has none of them.
    assert "OMP_NUM_THREADS" not in core.environ()
    assert "OMP_NUM_THREADS" not in worker.environ()
    assert core.exe() == worker.exe()


def test_the_first_answer_is_right(endpoint):
    done = endpoint.request("POST", "runsync", {"input": QUESTION}, timeout_s=120).json()
    assert done["status"] == "COMPLETED", done
    text = "".join(t for item in done["output"] for t in item["choices"][0]["tokens"])
    assert "Paris" in text, text
