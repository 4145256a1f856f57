"""A vision-language model behind the local endpoint: images in chat content, on the OpenAI
route (official client) and in native `messages`, counted, seen by the model and refused when
malformed or too many.

The model is a tiny random-weight Idefics3 built locally (tests/models/vision.py): its answers
are gibberish, so the tests check token counts, log-probabilities and errors, not text.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.models.vision import ensure_tiny_idefics3, image_prompt_tokens
from vllm_worker.local.testing import LocalEndpoint

QUESTION = "What is in the picture?"
#: Greedy, a few tokens whatever the random model says.
SAMPLING = {"temperature": 0, "max_tokens": 3, "ignore_eos": True}


def png_url(color: str, size: tuple[int, int] = (40, 30)) -> str:
    """A `data:image/png;base64,...` URL of a plain `color` PNG made with PIL."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def conversation(*urls: str) -> list[dict[str, Any]]:
    """One user turn: an `image_url` part per URL, then the question."""
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}]


#: README's native job (Models > Vision models): a red 40x30 PNG and the question.
IMAGE_JOB = {"messages": conversation(png_url("red")), "sampling_params": SAMPLING}


@pytest.fixture(scope="module")
def model() -> Path:
    return ensure_tiny_idefics3()


@pytest.fixture(scope="module")
def endpoint(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpoint]:
    log = tmp_path_factory.mktemp("vision") / "endpoint.log"
    with LocalEndpoint(
        log, MODEL_NAME=str(model), LIMIT_MM_PER_PROMPT='{"image": 1}', MAX_MODEL_LEN="512"
    ) as endpoint:
        endpoint.wait_ready()
        yield endpoint


@pytest.fixture(scope="module")
def client(endpoint: LocalEndpoint) -> Any:
    from openai import OpenAI

    return OpenAI(
        api_key=endpoint.api_key,
        base_url=f"{endpoint.url}/openai/v1",
        timeout=120,
        max_retries=0,
    )


def chat(client: Any, model: Path, messages: list[dict[str, Any]]) -> Any:
    return client.chat.completions.create(
        model=str(model),
        messages=messages,
        temperature=0,
        max_tokens=3,
        extra_body={"ignore_eos": True},
    )


def native(endpoint: LocalEndpoint, job: dict[str, Any]) -> dict[str, Any]:
    return endpoint.wait_final(endpoint.run(job), timeout_s=120)


def test_openai_client_counts_the_image_in_the_prompt(client, model):
    from transformers import AutoTokenizer

    with_image = chat(client, model, conversation(png_url("red")))
    text_only = chat(client, model, conversation())

    # The text alone, as the model's own tokenizer and template render it...
    tokenizer = AutoTokenizer.from_pretrained(model)
    text = [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    rendered = tokenizer.apply_chat_template(text, add_generation_prompt=True, tokenize=False)
    assert text_only.usage.prompt_tokens == len(
        tokenizer.encode(rendered, add_special_tokens=False)
    )
    # ...and the image adds exactly the tokens the model's config says one image takes.
    image_tokens = image_prompt_tokens(json.loads((model / "config.json").read_text()))
    assert image_tokens == 19  # 64x64 pixels / 8x8 patches / 2x2 shuffle + 3 markers
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens == image_tokens
    assert with_image.usage.completion_tokens == 3
    assert with_image.choices[0].finish_reason == "length"


def test_native_messages_count_the_same_prompt_as_openai(client, endpoint, model):
    for job in (IMAGE_JOB, {"messages": conversation(), "sampling_params": SAMPLING}):
        openai = chat(client, model, job["messages"])
        done = native(endpoint, job)
        assert done["status"] == "COMPLETED", done
        usage = done["output"][0]["usage"]
        assert usage == {"input": openai.usage.prompt_tokens, "output": 3}


def test_the_model_sees_the_pixels(endpoint):
    """Log-probabilities follow the image: the same picture twice gives the same ones, a
    different picture other ones, so the pixels reach the vision tower and the answer."""

    def logprobs(color: str) -> list[Any]:
        job = {
            "messages": conversation(png_url(color)),
            "sampling_params": {"temperature": 0, "max_tokens": 2, "logprobs": 5},
        }
        done = native(endpoint, job)
        assert done["status"] == "COMPLETED", done
        return list(done["output"][0]["choices"][0]["logprobs"])

    red = logprobs("red")
    assert len(red) == 2
    assert logprobs("red") == red
    assert logprobs("blue") != red


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,!!!not-base64", "Non-base64 digit found"),
        (
            "data:image/png;base64," + base64.b64encode(b"plain text, not a PNG").decode(),
            "Failed to load image: cannot identify image file",
        ),
    ],
    ids=["bad-base64", "not-an-image"],
)
def test_a_malformed_image_fails_the_job_naming_its_part(endpoint, client, model, url, reason):
    from openai import BadRequestError

    messages = [
        {"role": "system", "content": "Be brief."},
        *conversation(url),
    ]
    failed = native(endpoint, {"messages": messages, "sampling_params": SAMPLING})
    assert failed["status"] == "FAILED", failed
    assert failed["error"] == f"messages.1.content.0.image_url: {reason}"

    with pytest.raises(BadRequestError) as refused:
        chat(client, model, messages)
    assert reason in refused.value.message

    # The worker keeps serving: the next job, with a good image, works on both routes.
    done = native(
        endpoint, {"messages": conversation(png_url("green")), "sampling_params": SAMPLING}
    )
    assert done["status"] == "COMPLETED", done
    assert chat(client, model, conversation(png_url("green"))).usage.completion_tokens == 3


def test_limit_mm_per_prompt_refuses_a_second_image(endpoint, client, model):
    from openai import BadRequestError

    two = conversation(png_url("red"), png_url("blue"))
    failed = native(endpoint, {"messages": two, "sampling_params": SAMPLING})
    assert failed["status"] == "FAILED", failed
    assert failed["error"] == "messages: At most 1 image(s) may be provided in one prompt."

    with pytest.raises(BadRequestError) as refused:
        chat(client, model, two)
    assert "At most 1 image(s) may be provided in one prompt." in refused.value.message

    done = native(endpoint, {"messages": conversation(png_url("red")), "sampling_params": SAMPLING})
    assert done["status"] == "COMPLETED", done


def test_a_data_url_not_in_base64_fails_the_job_naming_its_part(endpoint, model):
    """vLLM raises NotImplementedError for it (HTTP 501 on its OpenAI route); a native job
    fails like any bad image, and the worker keeps serving."""
    messages = conversation("data:image/png,rawbytes")
    failed = native(endpoint, {"messages": messages, "sampling_params": SAMPLING})
    assert failed["status"] == "FAILED", failed
    reason = "Only base64 data URLs are supported for now."
    assert failed["error"] == f"messages.0.content.0.image_url: {reason}"

    body = {"model": str(model), "messages": messages, "max_tokens": 3}
    response = endpoint.request("POST", "openai/v1/chat/completions", body)
    assert response.status_code == 501, response.text
    assert response.json()["error"]["message"] == reason

    done = native(endpoint, {"messages": conversation(png_url("red")), "sampling_params": SAMPLING})
    assert done["status"] == "COMPLETED", done
