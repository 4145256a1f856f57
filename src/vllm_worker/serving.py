"""The serving state every job kind shares, built once on the event loop that serves jobs.

It is what `vllm serve` sets up between creating its engine and serving HTTP: vLLM's OpenAI
app on the worker's engine, with its served-model registry (base model names, LoRA adapters)
and its renderer (the resolved chat template and its settings), and the tokenizer. OpenAI jobs
call the app; native jobs take the engine and tokenizer from here, and are meant to use the
same registry and renderer, so that both paths agree on model names and chat templates.

It must be built on the loop that serves jobs (its set-up awaits the engine), which the
runpod SDK only starts after the engine: the scaler builds it before taking the first job, so
a set-up failure (a bad `LORA_MODULES`, a missing tool-parser plugin) stops the worker at
start-up. Under the SDK's development modes it is built by the first job instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from vllm_worker import vllm_errors, vllm_fixes
from vllm_worker.coalesce import BatchingEngineClient
from vllm_worker.errors import JobError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from vllm.entrypoints.openai.models.serving import OpenAIServingModels
    from vllm.renderers.online_renderer import OnlineRenderer
    from vllm.tokenizers import TokenizerLike
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

#: Packages of vLLM's app whose routes serve the model. The rest of the app runs the server
#: (health, load, version, metrics, profiling, LoRA loading, sleep and RPC, elastic EP,
#: SageMaker, RL weight updates) and is not reachable through jobs. Audio transcription takes
#: multipart file uploads, which a JSON job cannot carry.
_SERVING_PACKAGES = (
    "vllm.entrypoints.openai.",
    "vllm.entrypoints.anthropic.",
    "vllm.entrypoints.cohere.",
    "vllm.entrypoints.generate.",
    "vllm.entrypoints.pooling.",
    "vllm.entrypoints.scale_out.",
    "vllm.entrypoints.serve.tokenize.",
)
#: A serving package's route that acts on other clients' requests.
_ADMIN_PATHS = frozenset({"/inference/v1/abort_requests"})


class ServingError(JobError):
    """vLLM's serving layer could not be set up; every job fails with this message."""


@dataclasses.dataclass(frozen=True)
class ServingState:
    """What every job kind needs beside the engine."""

    engine: AsyncLLM
    app: FastAPI  # vLLM's OpenAI app
    routes: Mapping[str, str]  # route path -> HTTP method, for the routes jobs may call
    models: OpenAIServingModels  # served model names and LoRA adapters
    renderer: OnlineRenderer  # chat template, its kwargs and content format, as configured
    tokenizer: TokenizerLike
    tasks: tuple[str, ...]  # what the model does: `generate`, or pooling tasks (`embed`, ...)


class Serving:
    """Builds the `ServingState` once; every caller awaits the same build."""

    def __init__(self, engine: AsyncLLM, args: argparse.Namespace) -> None:
        self._engine = engine
        self._args = args
        self._built: asyncio.Future[ServingState] | None = None

    async def state(self) -> ServingState:
        """The serving state, built on first call; raises `ServingError` if set-up failed."""
        if self._built is None:
            self._built = asyncio.ensure_future(self._build())
        try:
            # One build for every job; a job cancelled meanwhile must not cancel it for others.
            return await asyncio.shield(self._built)
        except Exception as error:
            reason = vllm_errors.in_worker_terms(str(error))
            raise ServingError(f"vLLM's OpenAI server could not start: {reason}") from error

    async def _build(self) -> ServingState:
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.app import build_app
        from vllm.reasoning import ReasoningParserManager
        from vllm.tool_parsers import ToolParserManager

        args = self._args
        try:
            if args.tool_parser_plugin:
                ToolParserManager.import_tool_parser(args.tool_parser_plugin)
            if args.reasoning_parser_plugin:
                ReasoningParserManager.import_reasoning_parser(args.reasoning_parser_plugin)
            vllm_fixes.apply()
            tasks = await self._engine.get_supported_tasks()
            app = build_app(args, tasks, self._engine.model_config)
            # The app's streams come in each OpenAI job's batches (see `coalesce`).
            await init_app_state(BatchingEngineClient(self._engine), app.state, args, tasks)
        except Exception:
            logger.exception("vLLM's OpenAI server could not start")
            raise
        routes = job_routes(app)
        logger.info("OpenAI routes for jobs: %s", ", ".join(sorted(routes)))
        return ServingState(
            engine=self._engine,
            app=app,
            routes=routes,
            models=app.state.openai_serving_models,
            renderer=app.state.online_renderer,
            tokenizer=self._engine.get_tokenizer(),
            tasks=tuple(tasks),
        )


def job_routes(app: FastAPI) -> dict[str, str]:
    """Route -> HTTP method, for every route of vLLM's app a job may call.

    Routes with path parameters (`/v1/responses/{id}`) are left out: they address state held
    by one server process, and each job may land on another worker.
    """
    from fastapi.routing import APIRoute

    routes = {}
    for route in app.routes:
        if (
            isinstance(route, APIRoute)
            and route.include_in_schema  # hides docs and disabled stubs
            and not route.param_convertors
            and route.endpoint.__module__.startswith(_SERVING_PACKAGES)
            and route.path not in _ADMIN_PATHS
        ):
            routes[route.path] = "POST" if "POST" in route.methods else min(route.methods)
    return routes
