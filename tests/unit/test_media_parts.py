"""Locating the image part vLLM could not load, with vLLM's own media connector."""

from __future__ import annotations

import base64
import io
from types import SimpleNamespace
from typing import Any

from PIL import Image

from vllm_worker.media_parts import BadPart, bad_image_part

#: What `bad_image_part` reads of vLLM's `ModelConfig`: vLLM's defaults.
MODEL_CONFIG: Any = SimpleNamespace(
    multimodal_config=None, allowed_local_media_path="", allowed_media_domains=None
)


def png_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def test_names_the_turn_and_part_of_bad_base64():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Compare"}, image(png_url())]},
        {"role": "user", "content": [image(png_url()), image("data:image/png;base64,!!!")]},
    ]
    assert bad_image_part(messages, MODEL_CONFIG) == BadPart(
        "messages.2.content.1.image_url", "Non-base64 digit found"
    )


def test_data_that_is_no_image_is_named_without_python_object_reprs():
    text = base64.b64encode(b"just some text").decode()
    messages = [{"role": "user", "content": [image(f"data:image/png;base64,{text}")]}]
    bad = bad_image_part(messages, MODEL_CONFIG)
    assert bad is not None
    assert bad.field == "messages.0.content.0.image_url"
    assert bad.reason == "Failed to load image: cannot identify image file"


def test_good_images_remote_urls_and_text_give_none():
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [image(png_url()), {"type": "text", "text": "What?"}]},
        # never fetched again: a remote URL's error keeps vLLM's wording
        {"role": "user", "content": [image("http://127.0.0.1:9/missing.png")]},
        {"role": "assistant", "content": None},
    ]
    assert bad_image_part(messages, MODEL_CONFIG) is None


def test_data_not_in_base64_is_named():
    messages = [{"role": "user", "content": [image("data:,x")]}]
    assert bad_image_part(messages, MODEL_CONFIG) == BadPart(
        "messages.0.content.0.image_url", "Only base64 data URLs are supported for now."
    )
