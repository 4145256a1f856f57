"""A tiny random-weight Llama chat model, built locally, for the fast-engine workload.

On a CPU the default model makes ~250 tokens/s, which hides any per-token cost of the worker.
This model has the default model's architecture (Llama, chat template, byte-level BPE) but is
small enough for the CPU engine to run about ten times faster, as a GPU would expose the
worker. Its text is gibberish; it is for speed only. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vllm_worker.config import WorkerSettings

NAME = "bench-tiny-llama"

#: ChatML, as the default model uses, without its fixed system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
#: A few sentences are enough to fill a 512-token vocabulary with merges.
CORPUS = [
    "The capital city of France is Paris, and the capital of Italy is Rome.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "You are a helpful assistant. Answer the question as briefly as you can.",
    "Streaming sends tokens to the client in growing batches as they are generated.",
    "A worker takes jobs from a queue, runs them on the engine and posts the results back.",
    "Quick brown foxes jump over lazy dogs while the engine keeps every core busy.",
    "Benchmarks measure throughput, latency, memory and the processor time of each path.",
    "Seven wizards quietly hex jovial zebras; numbers like 0123456789 appear now and then.",
    "Mountains, rivers and forests cover the northern provinces during the long winter.",
]


def ensure_tiny_model() -> Path:
    """The model's folder under the worker cache, built on first use (a few seconds)."""
    return built_once(Path("models") / NAME, _build)


def built_once(relative: Path, build: Callable[[Path], None]) -> Path:
    """`relative` under the worker cache, made by `build(folder)` on first use.

    Built in a temporary folder next to it and renamed into place, so a folder that exists is
    complete, whatever a concurrent or interrupted build did; readable by others, as the
    default model is.
    """
    cache = WorkerSettings.from_env(os.environ).cache_dir(os.environ.get("XDG_CACHE_HOME"))
    target = cache / relative
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        build(work)
        for path in [work, *work.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def chatml_tokenizer(corpus: list[str], vocab_size: int, special: list[str] = SPECIAL) -> Any:
    """A byte-level BPE (as the default model's) trained on `corpus` with the ChatML `special`
    tokens; BOS `<|im_start|>`, EOS and padding `<|im_end|>`. Training is deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|im_end|>",
    )


def tiny_llama_config(tokenizer: Any, **overrides: Any) -> Any:
    """A 2-layer Llama `LlamaConfig` (hidden 128, two heads of 64) sized to `tokenizer`;
    `overrides` change any field."""
    from transformers import LlamaConfig

    fields: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 64,  # CPU attention rejects 16; 64 is what the default model uses
        "max_position_embeddings": 2048,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": True,
    }
    return LlamaConfig(**{**fields, **overrides})


def _build(out: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = chatml_tokenizer(CORPUS, vocab_size=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    config = tiny_llama_config(tokenizer)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
