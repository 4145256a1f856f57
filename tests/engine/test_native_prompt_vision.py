"""A native job's images, rendered by vLLM's renderer into the engine input (no engine runs).

The renderer the worker shares with vLLM's OpenAI layer is built here from the model's config
alone, as `vllm serve` builds it, so the test sees what `AsyncLLM.generate` would receive:
the image's pixels and the placeholder tokens they fill.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.models.vision import IMAGE_SIZE, IMAGE_WRAPPER_TOKENS, ensure_tiny_idefics3
from tests.models.vision import image_prompt_tokens as prompt_tokens_of
from vllm_worker import native_prompt
from vllm_worker.errors import JobInputError
from vllm_worker.native_input import NativeJob


def png_url(color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def job(*urls: str) -> NativeJob:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    content = [*parts, {"type": "text", "text": "What is in the picture?"}]
    return NativeJob.model_validate({"messages": [{"role": "user", "content": content}]})


@pytest.fixture(scope="module")
def model() -> Path:
    return ensure_tiny_idefics3()


@pytest.fixture(scope="module")
def renderer(model: Path) -> Any:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.renderers.online_renderer import OnlineRenderer
    from vllm.renderers.registry import renderer_from_config

    args = EngineArgs(model=str(model), limit_mm_per_prompt={"image": 1}, max_model_len=512)
    config = args.create_engine_config()
    return OnlineRenderer(
        config.model_config,
        renderer_from_config(config),
        request_logger=None,
        chat_template=None,
        chat_template_content_format="auto",
    )


def pixels(rendered: Any) -> Any:
    (item,) = rendered["mm_kwargs"]["image"]
    return item["pixel_values"].data


async def test_the_engine_input_carries_the_image_and_its_placeholders(renderer, model):
    config = json.loads((model / "config.json").read_text())
    red = await native_prompt.render(job(png_url("red")), renderer, 3)
    text_only = await native_prompt.render(job(), renderer, 3)

    assert red["type"] == "multimodal"
    assert "mm_kwargs" not in text_only
    # Resized to the vision tower's square, one tile (no splitting), three colour channels.
    assert tuple(pixels(red).shape) == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    # The image's tokens: a run of <image> tokens the vision features replace, in markers.
    (placeholder,) = red["mm_placeholders"]["image"]
    assert placeholder.length == prompt_tokens_of(config)
    assert int(placeholder.is_embed.sum()) == prompt_tokens_of(config) - IMAGE_WRAPPER_TOKENS
    ids = red["prompt_token_ids"]
    run = ids[placeholder.offset : placeholder.offset + placeholder.length]
    assert run.count(config["image_token_id"]) == int(placeholder.is_embed.sum())
    assert len(ids) - len(text_only["prompt_token_ids"]) == placeholder.length

    blue = await native_prompt.render(job(png_url("blue")), renderer, 3)
    assert not pixels(blue).equal(pixels(red))
    assert blue["mm_hashes"] != red["mm_hashes"]


async def test_render_errors_name_the_field(renderer):
    with pytest.raises(JobInputError) as bad:
        await native_prompt.render(job(png_url("red"), "data:image/png;base64,%%"), renderer, 3)
    assert str(bad.value) == "messages.0.content.1.image_url: Non-base64 digit found"

    with pytest.raises(JobInputError) as raw:  # vLLM raises NotImplementedError for it
        await native_prompt.render(job("data:image/png,rawbytes"), renderer, 3)
    message = "Only base64 data URLs are supported for now."
    assert str(raw.value) == f"messages.0.content.0.image_url: {message}"

    with pytest.raises(JobInputError) as too_many:
        await native_prompt.render(job(png_url("red"), png_url("blue")), renderer, 3)
    assert str(too_many.value) == "messages: At most 1 image(s) may be provided in one prompt."
