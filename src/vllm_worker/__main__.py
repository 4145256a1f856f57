"""Entrypoint: read settings, start the engine once, then hand the handler to the SDK loop.

Run as `python -m vllm_worker` with the runpod SDK's usual flags and environment.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
import threading
import time

from vllm_worker import logs


def main() -> None:
    started = time.perf_counter()
    # Start-up allocates millions of objects that live as long as the worker; collecting them
    # over and over costs about 1.7 s of imports. Collection resumes once the engine is up,
    # with the start-up heap frozen out of it, as `vllm serve` does.
    gc.disable()
    logs.setup()
    log = logging.getLogger("vllm_worker")

    from vllm_worker import config as settings
    from vllm_worker import model, volume
    from vllm_worker.local.settings import LocalEndpointSettings

    try:
        if LocalEndpointSettings.from_env(os.environ).local_endpoint:
            from vllm_worker.local.__main__ import main as serve_locally

            gc.enable()
            return serve_locally()
        config = settings.load()
    except settings.ConfigError as error:
        print(f"vllm-worker: invalid setting: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    # The SDK reads its level when imported; at its own default, DEBUG, it logs every prompt.
    os.environ["RUNPOD_LOG_LEVEL"] = config.worker.runpod_log_level
    if config.cpu_defaults:
        log.info(
            "no GPU: using CPU defaults %s (set the variables to override)", config.cpu_defaults
        )
    config = model.prepare(config)
    volume.place_compile_cache(config.worker)
    log.info("settings read in %.1fs; starting the engine", time.perf_counter() - started)

    from vllm import envs

    from vllm_worker import worker as assembly
    from vllm_worker.engine import EngineWatch, start_engine, warn_if_context_cut
    from vllm_worker.serving import ServingError

    # The SDK takes about a second to import; the engine's own process keeps this one waiting.
    sdk_import = threading.Thread(target=importlib.import_module, args=("runpod",))
    sdk_import.start()
    engine_started = time.perf_counter()
    engine = start_engine(config)
    log.info("engine ready in %.1fs", time.perf_counter() - engine_started)
    warn_if_context_cut(engine, config)
    sdk_import.join()
    gc.collect()
    gc.freeze()
    gc.enable()
    watch = EngineWatch(engine)
    watch.start()

    import runpod

    from vllm_worker import scaler

    worker = assembly.build(engine, config)

    async def on_start() -> None:
        await worker.start(envs.VLLM_LOG_STATS_INTERVAL)
        log.info("ready for jobs %.1fs after start", time.perf_counter() - started)

    scaler.install(grace_s=config.worker.shutdown_grace_period, on_start=on_start)
    max_concurrency = config.worker.max_concurrency
    try:
        runpod.serverless.start(
            {
                "handler": worker.handler,
                "concurrency_modifier": lambda _current: max_concurrency,
                "return_aggregate_stream": True,
            }
        )
    except ServingError as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    finally:
        watch.stop()
        engine.shutdown()
        gc.unfreeze()  # so the exit's clean-up frees them (else nanobind reports leaks)


if __name__ == "__main__":
    main()
