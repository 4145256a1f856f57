"""The worker exits non-zero once its engine is dead (checked in a child process)."""

import os
import subprocess
import sys
import textwrap
from typing import ClassVar

import pytest

SCRIPT = textwrap.dedent(
    """
    import time, types
    from vllm_worker.engine import EngineWatch

    resources = types.SimpleNamespace(engine_dead=False)
    engine = types.SimpleNamespace(
        engine_core=types.SimpleNamespace(resources=resources), output_handler=None
    )
    watch = EngineWatch(engine, interval_s=0.05, grace_s=0.2)
    watch.start()
    time.sleep(0.2)
    resources.engine_dead = True
    if {stop}:
        watch.stop()
    time.sleep(3)
    print("still alive")
    """
)


def run(stop: bool) -> subprocess.CompletedProcess:
    code = SCRIPT.format(stop=stop)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_dead_engine_ends_the_process_with_exit_code_one():
    result = run(stop=False)
    assert result.returncode == 1
    assert "still alive" not in result.stdout
    assert "vLLM engine died" in result.stderr


def test_stopped_watch_lets_a_deliberate_shutdown_exit_cleanly():
    result = run(stop=True)
    assert result.returncode == 0
    assert "still alive" in result.stdout


async def test_a_dead_engine_fails_the_waiting_requests_at_once():
    """Running jobs get vLLM's own EngineDeadError on their loop before the process exits."""
    import asyncio
    import types

    from vllm.v1.engine.exceptions import EngineDeadError

    from vllm_worker.engine import EngineWatch

    errors: list[BaseException] = []
    failed = asyncio.Event()

    def propagate_error(error: BaseException) -> None:
        errors.append(error)
        failed.set()

    output_handler = asyncio.ensure_future(asyncio.Event().wait())  # vLLM's output task
    engine = types.SimpleNamespace(
        engine_core=types.SimpleNamespace(resources=types.SimpleNamespace(engine_dead=True)),
        output_handler=output_handler,
        output_processor=types.SimpleNamespace(propagate_error=propagate_error),
    )
    watch = EngineWatch(engine, interval_s=0.01, grace_s=60)  # type: ignore[arg-type]
    watch.start()
    try:
        await asyncio.wait_for(failed.wait(), 5)
    finally:
        watch.stop()  # ends the grace period without exiting this process
        output_handler.cancel()
    assert len(errors) == 1 and isinstance(errors[0], EngineDeadError)


class _FakeOmp:
    entered: ClassVar[list[tuple[int, int]]] = []
    skip_setup = False
    cpu_lists: ClassVar[list[list[int]]] = [[0]]

    def __init__(self, vllm_config: object) -> None:
        pass

    def configure_omp_envs(self, rank: int, local_rank: int):
        import contextlib

        _FakeOmp.entered.append((rank, local_rank))
        return contextlib.nullcontext()


def _config(world_size: int = 1, backend: str = "mp", ipc: str | None = None):
    import types

    parallel = types.SimpleNamespace(
        world_size_across_dp=world_size, distributed_executor_backend=backend
    )
    multimodal = None if ipc is None else types.SimpleNamespace(mm_tensor_ipc=ipc)
    model = types.SimpleNamespace(multimodal_config=multimodal)
    return types.SimpleNamespace(parallel_config=parallel, model_config=model)


METHOD = "VLLM_WORKER_MULTIPROC_METHOD"


def test_on_cpu_one_model_runner_runs_in_a_forked_engine_core_bound_as_vllm_binds_it(
    monkeypatch,
):
    from vllm.utils import ompmultiprocessing

    from vllm_worker import engine_fork
    from vllm_worker.engine import _one_cpu_process

    monkeypatch.setattr(ompmultiprocessing, "OMPProcessManager", _FakeOmp)
    monkeypatch.setenv(METHOD, "spawn")  # what vLLM's CPU platform sets
    armed = []
    monkeypatch.setattr(
        engine_fork, "forked_engine_core", lambda cpus, then: _record(armed, cpus, then)
    )
    _FakeOmp.entered = []
    config = _config()
    started = []
    with _one_cpu_process(config, False, False, lambda: started.append(1)):  # type: ignore[arg-type]
        assert config.parallel_config.distributed_executor_backend == "uni"
        assert _FakeOmp.entered == [(0, 0)]  # the engine core is started inside
        assert armed == [[0]]  # forked, bound to vLLM's CPU list for the model runner
    assert started == [1]


def _record(armed: list, cpus: list[int] | None, then):
    import contextlib

    @contextlib.contextmanager
    def block():
        armed.append(cpus)
        yield
        then()

    return block()


@pytest.mark.parametrize(
    ("spawn_chosen", "ipc"), [(True, None), (False, "torch_shm")], ids=["user", "torch_shm"]
)
def test_a_spawn_the_user_or_vllm_needs_keeps_one_spawned_engine_core(
    monkeypatch, spawn_chosen, ipc
):
    from vllm.utils import ompmultiprocessing

    from vllm_worker.engine import _one_cpu_process

    monkeypatch.setattr(ompmultiprocessing, "OMPProcessManager", _FakeOmp)
    monkeypatch.setenv(METHOD, "spawn")
    _FakeOmp.entered = []
    config = _config(ipc=ipc)
    started = []
    with _one_cpu_process(config, False, spawn_chosen, lambda: started.append(1)):  # type: ignore[arg-type]
        assert config.parallel_config.distributed_executor_backend == "uni"
        assert os.environ[METHOD] == "spawn"
        assert started == [1]  # before the engine core starts, as on GPUs
    assert started == [1]


def test_a_chosen_backend_several_runners_or_a_gpu_keep_vllms_choice(monkeypatch):
    from vllm.platforms import current_platform
    from vllm.utils import ompmultiprocessing

    from vllm_worker.engine import _one_cpu_process

    monkeypatch.setattr(ompmultiprocessing, "OMPProcessManager", _FakeOmp)
    monkeypatch.setenv(METHOD, "spawn")
    _FakeOmp.entered = []
    started = []
    for config, chosen in ((_config(), True), (_config(world_size=2), False)):
        with _one_cpu_process(config, chosen, False, lambda: started.append(1)):  # type: ignore[arg-type]
            assert config.parallel_config.distributed_executor_backend == "mp"
            assert os.environ[METHOD] == "spawn"
    monkeypatch.setattr(current_platform, "is_cpu", lambda: False)
    config = _config()
    with _one_cpu_process(config, False, False, lambda: started.append(1)):  # type: ignore[arg-type]
        assert config.parallel_config.distributed_executor_backend == "mp"
    assert _FakeOmp.entered == []
    assert started == [1, 1, 1]


class _RecordingEngine:
    """An engine that records the requests it is sent, for `warm_up`."""

    def __init__(self, runner_type: str) -> None:
        import types

        self.model_config = types.SimpleNamespace(runner_type=runner_type)
        self.requests: list[str] = []

    async def generate(self, prompt, params, request_id):
        self.requests.append(request_id)
        yield None


async def test_warm_up_sends_one_request_to_a_generating_model_and_none_to_a_pooling_one(
    monkeypatch,
):
    from vllm.platforms import current_platform

    from vllm_worker.engine import warm_up

    monkeypatch.setattr(current_platform, "is_cpu", lambda: True)
    generating, pooling = _RecordingEngine("generate"), _RecordingEngine("pooling")
    await warm_up(generating)  # type: ignore[arg-type]
    await warm_up(pooling)  # type: ignore[arg-type]
    assert generating.requests == ["warm-up"]
    assert pooling.requests == []  # an embedding model cannot generate: nothing to warm
