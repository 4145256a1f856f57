"""In-process phases: raw vLLM, then the worker's handler, on one engine in this process.

Run by `python -m bench` as `python -m bench.inprocess SPEC_JSON RESULT_FILE`, one process per
workload, so each workload starts from a fresh process and its memory peaks are its own.
Progress goes to stderr; vLLM's own log (stdout) and the handler's job log go where the
caller sends them.

The engine is created exactly as the worker creates it (`config.load` + `start_engine`, with
the same CPU defaults) and shared by all phases: raw vLLM is that engine driven directly
through `AsyncLLM.generate` with delta outputs, as a plain script would.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import psutil
import uvloop

from bench.common import (
    MESSAGES,
    Workload,
    engine_processes,
    native_input,
    openai_body,
    run_phases,
    sampling_params,
)

#: How each streamed OpenAI chunk that carries tokens starts its delta; the first chunk
#: (`{"role": "assistant", "content": ""}`) and the usage chunk carry none.
CONTENT_DELTA = '"delta":{"content":'
#: The last chunk's token count, which also covers engine steps that carried several tokens.
COMPLETION_TOKENS = re.compile(r'"completion_tokens":(\d+)')


def log(message: str) -> None:
    print(f"  [in-process] {message}", file=sys.stderr, flush=True)


def make_paths(engine, handler, served_model: str) -> dict:
    """The four in-process paths, keyed by the names the report uses."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    tokenizer = engine.get_tokenizer()
    text = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    prompt = {"prompt_token_ids": tokenizer.encode(text, add_special_tokens=False)}
    ids = itertools.count()

    async def raw(index: int, max_tokens: int):
        params = SamplingParams(**sampling_params(max_tokens), output_kind=RequestOutputKind.DELTA)
        async for output in engine.generate(prompt, params, f"raw-{next(ids)}"):
            yield len(output.outputs[0].token_ids)

    def native(stream: bool):
        async def path(index: int, max_tokens: int):
            job = {"id": f"bench-{next(ids)}", "input": native_input(stream, max_tokens)}
            seen = 0
            async for item in handler(job):
                if "error" in item:
                    raise RuntimeError(item["error"])
                new, seen = item["usage"]["output"] - seen, item["usage"]["output"]
                yield new

        return path

    async def openai(index: int, max_tokens: int):
        job_input = {
            "openai_route": "/v1/chat/completions",
            "openai_input": openai_body(served_model, max_tokens),
        }
        counted = 0
        async for item in handler({"id": f"bench-{next(ids)}", "input": job_input}):
            if isinstance(item, dict):
                raise RuntimeError(item.get("error", item))
            events = item.count(CONTENT_DELTA)
            counted += events
            if usage := COMPLETION_TOKENS.search(item):
                events += int(usage[1]) - counted
            yield events

    return {
        "raw": raw,
        "handler-stream": native(True),
        "handler-final": native(False),
        "handler-openai": openai,
    }


async def run(workload: Workload) -> dict:
    from vllm_worker import config as worker_config
    from vllm_worker import model, worker
    from vllm_worker.engine import start_engine

    config = model.prepare(worker_config.load(workload.env()))
    started = time.perf_counter()
    engine = start_engine(config)
    log(f"engine ready in {time.perf_counter() - started:.1f}s")
    try:
        built = worker.build(engine, config)
        await built.serving.state()
        paths = make_paths(engine, built.handler, config.served_model_name)
        me = psutil.Process()
        processes = {"worker": [me], "engine": engine_processes(me)}
        # The benchmark's main process started this one: engines under it are ours.
        root = psutil.Process(os.getppid())
        results = await run_phases(workload, paths, processes, root, log)
    finally:
        engine.shutdown()
    return {"results": results}


def main() -> None:
    spec, out = json.loads(sys.argv[1]), Path(sys.argv[2])
    spec["requests"] = {int(c): n for c, n in spec["requests"].items()}
    # The handler logs one line per job, as in the worker (whose log level is INFO).
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # uvloop, as the worker's job loop runs (vllm_worker.scaler); raw vLLM shares this loop.
    out.write_text(json.dumps(uvloop.run(run(Workload(**spec)))))


if __name__ == "__main__":
    main()
