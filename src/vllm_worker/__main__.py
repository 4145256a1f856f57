"""Entrypoint: read settings, start the engine once, then hand the handler to the SDK loop.

Run as `python -m vllm_worker` with the runpod SDK's usual flags and environment.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from vllm_worker import logs


def main() -> None:
    started = time.perf_counter()
    logs.setup()
    log = logging.getLogger("vllm_worker")
    # The SDK logs every streamed item (prompt and output text) at its default DEBUG level.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

    from vllm_worker.config import ConfigError, LocalEndpointSettings, load

    try:
        if LocalEndpointSettings.from_env(os.environ).local_endpoint:
            from vllm_worker.local.__main__ import main as serve_locally

            return serve_locally()
        config = load()
    except ConfigError as error:
        print(f"vllm-worker: invalid setting: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if config.cpu_defaults:
        log.info(
            "no GPU: using CPU defaults %s (set the variables to override)", config.cpu_defaults
        )
    log.info("settings read in %.1fs; starting the engine", time.perf_counter() - started)

    from vllm_worker.engine import EngineWatch, start_engine
    from vllm_worker.handler import make_handler
    from vllm_worker.shutdown import GracefulStop

    engine_started = time.perf_counter()
    engine = start_engine(config)
    log.info("engine ready in %.1fs", time.perf_counter() - engine_started)
    watch = EngineWatch(engine)
    watch.start()
    graceful = GracefulStop(config.worker.shutdown_grace_period)
    graceful.start()

    import runpod

    max_concurrency = config.worker.max_concurrency
    log.info("ready for jobs %.1fs after start", time.perf_counter() - started)
    try:
        runpod.serverless.start(
            {
                "handler": make_handler(engine, config),
                "concurrency_modifier": lambda _current: max_concurrency,
                "return_aggregate_stream": True,
            }
        )
    finally:
        graceful.stop()
        watch.stop()
        engine.shutdown()


if __name__ == "__main__":
    main()
