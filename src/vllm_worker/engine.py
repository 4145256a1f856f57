"""The one vLLM engine of the worker: created once at start-up and watched until it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vllm_worker.config import Config, engine_args

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

#: Seconds a dead engine's running jobs get to report their failure before the process exits.
DEATH_GRACE_S = 3.0


def start_engine(config: Config, on_core_started: Callable[[], None] = lambda: None) -> AsyncLLM:
    """Create the `AsyncLLMEngine`; its core runs in a child process vLLM starts.

    On CPU with one model runner, the model runs inside that engine-core process (vLLM's
    uni-process executor) instead of a third process, and that process is forked from this
    one, not spawned: see `_one_cpu_process`. `on_core_started` runs once, as soon as the
    engine-core process exists (elsewhere: before it is started), for work that may overlap
    the engine's start but not a fork.
    """
    from vllm import envs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.executor import Executor

    args = engine_args(config)
    # Read before vLLM's CPU platform sets it to spawn while building the configuration.
    spawn_chosen = envs.VLLM_WORKER_MULTIPROC_METHOD == "spawn"
    vllm_config = args.create_engine_config(UsageContext.API_SERVER)
    chosen = "distributed_executor_backend" in config.given
    with _one_cpu_process(vllm_config, chosen, spawn_chosen, on_core_started):
        return AsyncLLM(
            vllm_config=vllm_config,
            executor_class=Executor.get_class(vllm_config),
            log_requests=args.enable_log_requests,
            log_stats=not args.disable_log_stats,
            usage_context=UsageContext.API_SERVER,
        )


@contextlib.contextmanager
def _one_cpu_process(
    vllm_config: VllmConfig,
    chosen: bool,
    spawn_chosen: bool,
    on_core_started: Callable[[], None],
) -> Iterator[None]:
    """On CPU, run the model in the engine-core process, bound as vLLM binds a model runner.

    vLLM's CPU platform turns the uni-process executor into the multiprocessing one, because
    in a process that embeds vLLM (`LLM` without multiprocessing) it cannot set up OpenMP.
    `AsyncLLM` always runs the engine core in a process of its own, started here, so giving
    that process the OpenMP variables vLLM gives its model-runner process (threads pinned to
    the cores it does not reserve for the scheduler) is the same set-up, one process fewer:
    no second import of torch and vLLM at start-up (about 10 s on 2 cores), and no scheduler
    busy-polling the model runner's shared-memory queue on the core the worker and the
    local endpoint run on. GPUs, several model runners, or a backend the user chose keep
    vLLM's choice.

    The engine core is then forked (`engine_fork`), as vLLM does on GPUs: this process has
    imported torch and vLLM already, a spawned one would import them again (6-7 s). Kept
    spawned: `VLLM_WORKER_MULTIPROC_METHOD=spawn` set by the user, and multimodal tensors
    over torch shared memory, which vLLM refuses without spawn (`config/vllm.py`).
    """
    from vllm.platforms import current_platform

    parallel = vllm_config.parallel_config
    if (
        chosen
        or not current_platform.is_cpu()
        or parallel.world_size_across_dp != 1
        or parallel.distributed_executor_backend != "mp"
    ):
        on_core_started()
        yield
        return
    from vllm.utils.ompmultiprocessing import OMPProcessManager

    from vllm_worker.engine_fork import forked_engine_core

    parallel.distributed_executor_backend = "uni"
    omp = OMPProcessManager(vllm_config)
    with omp.configure_omp_envs(rank=0, local_rank=0):
        if spawn_chosen or not _may_fork(vllm_config):
            on_core_started()
            yield
            return
        cpus = None if omp.skip_setup else omp.cpu_lists[0]
        with forked_engine_core(cpus, on_core_started):
            yield


def _may_fork(vllm_config: VllmConfig) -> bool:
    """Whether the engine core may be forked: not for multimodal tensors over torch shared
    memory (vLLM: "torch_shm is known to fail without VLLM_WORKER_MULTIPROC_METHOD set to
    spawn")."""
    multimodal = vllm_config.model_config.multimodal_config
    return multimodal is None or multimodal.mm_tensor_ipc != "torch_shm"


async def warm_up(engine: AsyncLLM) -> None:
    """On CPU, one request of one token, so the first job does not pay for the engine's lazy
    set-up (about 0.7 s of its first forward pass: vLLM skips its own warm-up on CPU with eager
    mode and a fixed KV cache size). Run beside the serving layer's build, which uses the
    worker's core while this uses the engine's. GPUs keep vLLM's own warm-up only; a failure
    here is left for the first job to meet."""
    from vllm import SamplingParams
    from vllm.inputs import tokens_input
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or engine.model_config.runner_type != "generate":
        return
    try:
        async for _ in engine.generate(tokens_input([0]), SamplingParams(max_tokens=1), "warm-up"):
            pass
    except Exception as error:  # only a speed-up: the first job meets any real error
        logger.debug("engine warm-up request failed: %r", error)


def warn_if_context_cut(engine: AsyncLLM, config: Config) -> None:
    """Log a warning when vLLM's auto-fit served less than the model's context, because the
    KV cache cannot hold one request of that length (MAX_MODEL_LEN unset)."""
    if "max_model_len" in config.given:
        return
    context = engine_args(config).create_model_config().max_model_len
    served = engine.model_config.max_model_len
    if served < context:
        logger.warning(
            "MAX_MODEL_LEN is unset and the model's context of %d tokens does not fit the KV "
            "cache: serving at most %d tokens per request (prompt and output). Give the KV "
            "cache more memory (GPU_MEMORY_UTILIZATION, KV_CACHE_MEMORY_BYTES, KV_CACHE_DTYPE) "
            "to serve more, or set MAX_MODEL_LEN to choose.",
            context,
            served,
        )


class EngineWatch(threading.Thread):
    """Exits the process non-zero once the engine is dead, so the platform replaces the worker.

    A thread, not a task: it must notice a death even while no job (and so no event loop
    work) is running. Running jobs see `EngineDeadError` and fail with a clear message
    during the grace period; then the process ends, taking no more jobs it cannot serve.
    `stop()` it before shutting the engine down on purpose.
    """

    def __init__(
        self, engine: AsyncLLM, interval_s: float = 0.5, grace_s: float = DEATH_GRACE_S
    ) -> None:
        super().__init__(name="engine-watch", daemon=True)
        self._engine = engine
        self._interval_s = interval_s
        self._grace_s = grace_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._interval_s):
            if self._engine.engine_core.resources.engine_dead:
                logger.error("vLLM engine died; exiting in %.0f s", self._grace_s)
                self._fail_running_requests()
                if not self._stopped.wait(self._grace_s):
                    os._exit(1)

    def _fail_running_requests(self) -> None:
        """Hand every waiting request vLLM's own `EngineDeadError` now: vLLM notices a killed
        engine core only once its clean-up is done, which can outlast the grace period."""
        handler = getattr(self._engine, "output_handler", None)
        if handler is None:  # no request was ever made
            return
        from vllm.v1.engine.exceptions import EngineDeadError

        fail = self._engine.output_processor.propagate_error
        handler.get_loop().call_soon_threadsafe(fail, EngineDeadError())

    def stop(self) -> None:
        self._stopped.set()


async def report_stats(engine: AsyncLLM, interval_s: float) -> None:
    """Log vLLM's throughput line every interval (as `vllm serve` does) and the number of
    requests the engine still holds whenever it changes, so a stuck request shows."""
    held = None
    while True:
        await asyncio.sleep(interval_s)
        await engine.do_log_stats()
        now = engine.get_num_unfinished_requests()
        if now != held:
            logger.info("engine holds %d unfinished request(s)", now)
            held = now
