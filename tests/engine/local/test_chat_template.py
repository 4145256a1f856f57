"""A model without a chat template, behind the local endpoint: chat jobs on both APIs fail with
the setting that fixes it, prompt jobs work, and the engine gets only rendered inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import default_model_folder
from vllm_worker.local.testing import LocalEndpoint
from vllm_worker.vllm_errors import NO_CHAT_TEMPLATE


def without_chat_template(source: Path, target: Path) -> Path:
    """A copy of a model folder (weights linked) whose tokenizer has no chat template."""
    target.mkdir()
    for file in source.iterdir():
        if file.name == "chat_template.jinja":
            continue
        if file.name == "tokenizer_config.json":
            settings = json.loads(file.read_text())
            settings.pop("chat_template", None)
            (target / file.name).write_text(json.dumps(settings))
        else:
            os.symlink(file, target / file.name)
    return target


def test_chat_jobs_name_custom_chat_template_and_prompts_still_work(tmp_path):
    folder = without_chat_template(default_model_folder(), tmp_path / "no-template")
    with LocalEndpoint(tmp_path / "endpoint.log", MODEL_NAME=str(folder)) as endpoint:
        endpoint.wait_ready()
        for job in (
            {"messages": [{"role": "user", "content": "Hi"}]},
            {"prompt": "Hi", "apply_chat_template": True},
        ):
            failed = endpoint.wait_final(endpoint.run(job))
            assert failed["status"] == "FAILED", failed
            field = "messages" if "messages" in job else "prompt"
            assert failed["error"] == f"{field}: {NO_CHAT_TEMPLATE}", failed

        body = {"model": str(folder), "messages": [{"role": "user", "content": "Hi"}]}
        response = endpoint.request("POST", "openai/v1/chat/completions", body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"] == NO_CHAT_TEMPLATE

        done = endpoint.wait_final(
            endpoint.run({"prompt": "Hi", "sampling_params": {"max_tokens": 3, "ignore_eos": True}})
        )
        assert done["status"] == "COMPLETED", done
        assert done["output"][0]["usage"]["output"] == 3
        assert "Passing raw prompts" not in endpoint.log_text()
