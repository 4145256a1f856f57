"""The content part of a conversation whose image vLLM could not load.

vLLM's chat parser loads every image of a conversation together and reports a bad one
(`Non-base64 digit found`, `Failed to load image: ...`) without saying which part it was. Once
rendering has failed, `bad_image_part` loads the conversation's inline (`data:`) images again,
one at a time, with vLLM's own media connector, so the error can name the part at fault.
Remote URLs are not fetched a second time; their errors keep vLLM's wording.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from vllm_worker import vllm_errors

if TYPE_CHECKING:
    from vllm.config import ModelConfig

#: Python object reprs in PIL's messages (`cannot identify image file <_io.BytesIO object at
#: 0x7f...>`) say nothing to a user and differ on every call.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-f]+>")


class BadPart(NamedTuple):
    """A content part whose image does not load: its job field and vLLM's reason."""

    field: str  # e.g. "messages.0.content.1.image_url"
    reason: str


def bad_image_part(messages: list[dict[str, Any]], model_config: ModelConfig) -> BadPart | None:
    """The first `image_url` part with inline data that vLLM cannot load as an image, if any.

    `messages` are the job's chat turns (OpenAI's shape); parts whose URL is not a `data:` URL
    are skipped. Loading goes through the media connector vLLM's chat parser uses (the one
    `VLLM_MEDIA_CONNECTOR` names, with the model's media settings), so it fails exactly when
    rendering did.
    """
    connector = None
    for field, url in _inline_images(messages):
        if connector is None:
            connector = _connector(model_config)
        try:
            connector.fetch_image(url)
        except (ValueError, NotImplementedError) as error:  # bad base64, not an image, not base64
            return BadPart(field, _OBJECT_REPR.sub("", vllm_errors.message_of(error)))
    return None


def _inline_images(messages: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(field, URL) of each `image_url` part whose URL is inline `data:`."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str) and url[:5].lower() == "data:":
                yield f"messages.{i}.content.{j}.image_url", url


def _connector(model_config: ModelConfig) -> Any:
    """vLLM's media connector with the model's settings, as its chat parser builds one."""
    from vllm import envs
    from vllm.multimodal.media import MEDIA_CONNECTOR_REGISTRY

    multimodal = model_config.multimodal_config
    return MEDIA_CONNECTOR_REGISTRY.load(
        envs.VLLM_MEDIA_CONNECTOR,
        media_io_kwargs=multimodal.media_io_kwargs if multimodal else None,
        allowed_local_media_path=model_config.allowed_local_media_path,
        allowed_media_domains=model_config.allowed_media_domains,
    )
