"""A tiny Llama whose tokenizer has `<think>` and `</think>` as single tokens and whose weights
make greedy decoding write one known answer: `<think>` REASONING `</think>` CONTENT, then EOS.

vLLM's `<think>` reasoning parsers (deepseek_r1, qwen3, ...) look the two markers up as
single vocabulary entries; the default model's tokenizer has neither, so a reasoning test
needs its own model. Random weights would never close the thought, so the weights are set by
hand: every layer's output projections are zero (the residual stream stays the current
token's embedding) and the output head maps each token of the answer to the next one, a
bigram chain run by vLLM's real Llama implementation. Nothing is downloaded.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from bench.tiny_model import CHAT_TEMPLATE, built_once, chatml_tokenizer, tiny_llama_config

NAME = "test-reasoning-llama"

THINK, END_THINK = "<think>", "</think>"
#: What the model thinks and what it answers; each word must be one token of the vocabulary
#: (checked at build time), and no token may repeat, as the chain has one successor per token.
REASONING_WORDS = ["The", " capital", " of", " France"]
CONTENT_WORDS = ["Paris", "."]
REASONING = "".join(REASONING_WORDS)
CONTENT = "".join(CONTENT_WORDS)

EOS = "<|im_end|>"
CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "Paris is a city; Rome is a city too.",
    "What is the capital of France? Think first, then answer in one word.",
    "The user asks a question; the assistant thinks about it and answers briefly.",
    "Numbers such as 0123456789 and words such as weather, city and answer appear too.",
] * 3


def ensure_reasoning_model() -> Path:
    """The model's folder under the worker cache, built on first use (a few seconds) and
    renamed into place only once complete, so a concurrent or interrupted build leaves no
    half-written model."""
    return built_once(Path("models") / NAME, _build)


def _tokenizer():  # type: ignore[no-untyped-def]
    """A byte-level BPE trained on `CORPUS`, ChatML specials, the think markers added as
    ordinary (not special) tokens so decoded text keeps them, as DeepSeek-R1's tokenizer does."""
    from tokenizers import AddedToken

    tokenizer = chatml_tokenizer(CORPUS, vocab_size=400)
    tokenizer.add_tokens([AddedToken(THINK, special=False), AddedToken(END_THINK, special=False)])
    # ChatML: the generation prompt ends with a newline, the token the chain starts from.
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def answer_ids(tokenizer) -> list[int]:  # type: ignore[no-untyped-def]
    """The token ids of the answer, from the newline ending the prompt to EOS.

    Raises:
        ValueError: a word is not one token, or a token repeats (the chain would loop).
    """
    words = ["\n", THINK, *REASONING_WORDS, END_THINK, *CONTENT_WORDS]
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{word!r} is {len(encoded)} tokens, not one")
        ids.append(encoded[0])
    ids.append(tokenizer.convert_tokens_to_ids(EOS))
    if len(set(ids)) != len(ids):
        raise ValueError(f"the answer repeats a token: {ids}")
    return ids


def _build(out: Path) -> None:
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = _tokenizer()
    chain = answer_ids(tokenizer)
    config = tiny_llama_config(tokenizer, max_position_embeddings=1024, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:  # no layer changes the residual stream
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = model.model.embed_tokens.weight
        embed.normal_()
        head = model.lm_head.weight
        head.zero_()
        for current, following in itertools.pairwise(chain):
            # the logit of `following` is 4 * |e|^2 (about 512) when `current` is read, while
            # any other pair of random embeddings scores about 4 * N(0, 128): a clear argmax
            head[following] = 4 * embed[current]
    model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
