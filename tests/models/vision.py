"""A tiny random-weight Idefics3 vision-language model, built locally for the vision tests.

Idefics3 (the architecture of SmolVLM) is a SigLIP-style vision tower, a pixel-shuffle connector
and a Llama language model. vLLM 0.32's CPU build runs it, and its image processor has a PIL
backend, so it needs no torchvision, which the CPU environment must not have (see
builder/requirements-cpu.lock). LLaVA, the first choice, cannot load here: vLLM's `llava`
module imports its Pixtral module, which imports transformers' Pixtral image processor, which
imports torchvision (`ModuleNotFoundError: No module named 'torchvision'` while vLLM inspects
the architecture); llava_next, qwen2_vl, gemma3_mm, internvl and mistral3 fail the same way.

Sizes are as small as the CPU engine takes: attention heads of 64 (CPU attention rejects 16),
64x64 images in 8x8 patches, no image splitting. The weights are random, so answers are
gibberish; the tests check how images are counted, reach the model and are refused, not what
the model says. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.tiny_model import built_once, chatml_tokenizer, tiny_llama_config

NAME = "test-tiny-idefics3"
#: The text that stands for one image in a prompt; vLLM expands it to the image's tokens.
IMAGE_TOKEN = "<image>"
#: Tokens Idefics3's processor puts around an unsplit image's `<image>` run:
#: `<fake_token_around_image><global-img>` before it, `<fake_token_around_image>` after.
IMAGE_WRAPPER_TOKENS = 3
#: Side of the square image the vision tower sees, and of its patches, in pixels.
IMAGE_SIZE = 64
PATCH_SIZE = 8

#: ChatML whose user turns may be lists of parts: text parts as their text, image parts as
#: the image token (vLLM hands the template `{"type": "image"}` for each `image_url` part).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
#: Idefics3's processor looks these up by name; the row/column tags mark tiles of split images.
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    IMAGE_TOKEN,
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]
#: A few sentences are enough to fill a 512-token vocabulary with merges.
CORPUS = [
    "Describe the picture: a red square on a white background.",
    "What colour is the image? It is mostly blue with a green stripe.",
    "You are a helpful assistant. Answer the question as briefly as you can.",
    "The photograph shows a cat sitting on a mat beside an open window.",
    "Count the shapes in the drawing and name their colours one by one.",
    "Seven wizards quietly hex jovial zebras; numbers like 0123456789 appear now and then.",
]


def ensure_tiny_idefics3() -> Path:
    """The model's folder under the worker cache, built on first use (a few seconds).

    Built in a temporary folder and renamed into place, so a folder that exists is complete.
    """
    return built_once(Path("models") / NAME, _build)


def image_prompt_tokens(config: dict[str, Any]) -> int:
    """Prompt tokens one unsplit image adds, from the model's `config.json` alone.

    Idefics3's rule (transformers' `Idefics3Processor`, vLLM's `Idefics3ProcessingInfo`): the
    vision tower cuts the image into (image_size / patch_size)² patches, the connector's pixel
    shuffle merges each scale_factor² of them into one embedding, and the processor wraps that
    run of `<image>` tokens in `IMAGE_WRAPPER_TOKENS` marker tokens.
    """
    vision = config["vision_config"]
    patches = (vision["image_size"] // vision["patch_size"]) ** 2
    return patches // config["scale_factor"] ** 2 + IMAGE_WRAPPER_TOKENS


def _build(out: Path) -> None:
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
        Idefics3VisionConfig,
    )

    tokenizer = chatml_tokenizer(CORPUS, vocab_size=512, special=SPECIAL)
    text = tiny_llama_config(tokenizer)
    vision = Idefics3VisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # heads of 64
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=2,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    seq_len = image_prompt_tokens(config.to_dict()) - IMAGE_WRAPPER_TOKENS
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            do_image_splitting=False,
            size={"longest_edge": IMAGE_SIZE},
            max_image_size={"longest_edge": IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
        image_seq_len=seq_len,
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
