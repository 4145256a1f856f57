"""Entrypoint: read settings, start the engine once, then hand the handler to the SDK loop.

Run as `python -m vllm_worker` with the runpod SDK's usual flags and environment.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, NoReturn

from vllm_worker import logs

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

    from vllm_worker.config import Config
    from vllm_worker.output_tee import OutputTee

#: Modules the worker needs once the engine is up, imported while it starts.
_IMPORTED_DURING_ENGINE_START = (
    "runpod",
    "vllm.entrypoints.launchers.app",
    "vllm.entrypoints.launchers.api_server.app_state",
)


def _import_and_collect(modules: tuple[str, ...]) -> None:
    """Import `modules`, then collect the start-up garbage once and freeze what is left out
    of later collections (as `vllm serve` does): about 0.8 s of this process's time that
    would otherwise follow the engine's start instead of overlapping it."""
    for name in modules:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()


def main() -> None:
    started = time.perf_counter()
    # Start-up allocates millions of objects that live as long as the worker; collecting them
    # over and over costs about 1.7 s of imports. Collection resumes once the engine is up,
    # with the start-up heap frozen out of it, as `vllm serve` does.
    gc.disable()
    logs.setup()
    log = logging.getLogger("vllm_worker")

    from vllm_worker import config as settings
    from vllm_worker import model, preflight, volume
    from vllm_worker.local.settings import LocalEndpointSettings
    from vllm_worker.output_tee import OutputTee

    tee: OutputTee | None = None
    config: settings.Config | None = None
    try:
        if LocalEndpointSettings.from_env(os.environ).local_endpoint:
            from vllm_worker.local.__main__ import main as serve_locally

            gc.enable()
            return serve_locally()
        # What the engine's processes print names the cause when they fail to start.
        tee = OutputTee().start()
        config = settings.load()
        # The SDK reads its level when imported; at its own default, DEBUG, it logs every prompt.
        os.environ["RUNPOD_LOG_LEVEL"] = config.worker.runpod_log_level
        if config.cpu_defaults:
            log.info(
                "no GPU: using CPU defaults %s (set the variables to override)",
                config.cpu_defaults,
            )
        config = model.prepare(config)
        preflight.check(config)
        volume.place_compile_cache(config.worker)
        log.info("settings read in %.1fs; starting the engine", time.perf_counter() - started)

        from vllm_worker.engine import start_engine

        # The SDK and vLLM's OpenAI app take about two seconds to import; the engine's own
        # process keeps this one waiting meanwhile. Started once that process exists: a
        # process forked while this thread imports would inherit its import locks held.
        sdk_import = threading.Thread(
            target=_import_and_collect, args=(_IMPORTED_DURING_ENGINE_START,)
        )
        engine_started = time.perf_counter()
        engine = start_engine(config, on_core_started=sdk_import.start)
    except Exception as error:
        gc.enable()
        _start_failed(error, tee.text() if tee else "", config)
    try:
        _serve(engine, config, tee, started, engine_started, sdk_import)
    finally:
        tee.stop()


def _serve(
    engine: AsyncLLM,
    config: Config,
    tee: OutputTee,
    started: float,
    engine_started: float,
    sdk_import: threading.Thread,
) -> None:
    """Serve jobs on the started engine until the SDK's job loop ends."""
    log = logging.getLogger("vllm_worker")
    log.info("engine ready in %.1fs", time.perf_counter() - engine_started)

    from vllm import envs

    from vllm_worker import failed_worker
    from vllm_worker import worker as assembly
    from vllm_worker.engine import EngineWatch, warm_up, warn_if_context_cut
    from vllm_worker.serving import ServingError
    from vllm_worker.startup_failure import classify

    warn_if_context_cut(engine, config)
    sdk_import.join()
    gc.enable()
    watch = EngineWatch(engine)
    watch.start()

    import runpod

    from vllm_worker import scaler

    worker = assembly.build(engine, config)
    max_concurrency = config.worker.max_concurrency
    sdk_config = {
        "handler": worker.handler,
        "concurrency_modifier": lambda _current: max_concurrency,
        "return_aggregate_stream": True,
    }

    async def on_start() -> None:
        warming = asyncio.ensure_future(warm_up(engine))
        await asyncio.sleep(0)  # its request reaches the engine before the serving build runs
        try:
            await worker.start(envs.VLLM_LOG_STATS_INTERVAL)
            await warming
        except Exception as error:
            warming.cancel()
            failure = classify(error, tee.text(), config, os.environ)
            if failure is None:
                raise
            # A setting is wrong: free the engine, and fail every job with the reason. The
            # SDK reads the handler from this dict at each job (runpod 1.10 `rp_job.handle_job`).
            watch.stop()
            engine.shutdown()
            failed_worker.report(failure)
            sdk_config["handler"] = failed_worker.handler(failure)
            return
        tee.forget()
        log.info("ready for jobs %.1fs after start", time.perf_counter() - started)

    scaler.install(grace_s=config.worker.shutdown_grace_period, on_start=on_start)
    try:
        runpod.serverless.start(sdk_config)
    except ServingError as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    finally:
        watch.stop()
        engine.shutdown()
        gc.unfreeze()  # so the exit's clean-up frees them (else nanobind reports leaks)


def _start_failed(error: Exception, output: str, config: Config | None) -> NoReturn:
    """Hand a known failure's sentence to the SDK as every job's error; exit 1 on any other
    failure, so the platform replaces a worker whose failure may pass by itself.

    The SDK picks its mode as for a working worker: in platform mode its job loop fails each
    job at once; under `--rp_serve_api` its development server does; with neither it looks for
    `test_input.json` and exits 1 without one.
    """
    from vllm_worker import failed_worker
    from vllm_worker.startup_failure import classify

    failure = classify(error, output, config, os.environ)
    if failure is None:
        logging.getLogger("vllm_worker").error("start-up failed", exc_info=error)
        raise SystemExit(1)
    failed_worker.serve(failure)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
