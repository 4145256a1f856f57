"""The RunPod Hub's test jobs (`.runpod/tests.json`) on the real engine."""

import json
from pathlib import Path

from tests.helpers import run_job, text_of
from vllm_worker import default_model

ROOT = Path(__file__).parents[2]


def committed(relative: str) -> dict:
    return json.loads((ROOT / relative).read_text())


async def test_hub_test_jobs_succeed_on_the_default_model(handler):
    native, chat = committed(".runpod/tests.json")["tests"]
    items = await run_job(handler, native["input"])
    assert "error" not in items[-1], items
    assert "Paris" in text_of(items)
    items = await run_job(handler, chat["input"])
    assert "error" not in items[-1], items
    (answer,) = items
    assert answer["model"] == default_model.HUB_ID
    assert "Paris" in answer["choices"][0]["message"]["content"]
