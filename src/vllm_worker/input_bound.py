"""A bound on the size of a job's input, checked in one cheap pass before any costly parsing.

Why: every job runs on the worker's one event loop, and vLLM's OpenAI app validates a request
there with pydantic at about 45 µs per element of a chat message's content list: 400,000
integers took it 20 s, during which every other stream stalled. Nothing the model can take
comes near such sizes, so an input beyond this bound is refused first, by a linear walk over
its JSON that stops at the first excess.

Where the bound comes from: the engine's context of `max_model_len` tokens, its `vocab_size`,
and the characters of the tokenizer's longest token:

- a list or object holds at most `max_model_len` elements (each message, content part, tool
  or prompt token is at least one token of context), except the token-id sets
  (`allowed_token_ids`, `logit_bias`, `stop_token_ids`, `logprob_token_ids`), which may name
  each token of the vocabulary once: `max(max_model_len, vocab_size)`;
- the lists and objects of the input hold at most `4 * max_model_len` elements in all, not
  counting the token-id sets (a message in its list, its role and content, a content part:
  a few JSON elements around each token at the very least);
- its strings hold at most `max_model_len * longest_token_chars` characters in all: no token
  covers more characters than that, so more text cannot fit the context.

Inputs under the bound may still be refused later, by the model's exact limits.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from vllm_worker.errors import JobInputError

if TYPE_CHECKING:
    from vllm.tokenizers import TokenizerLike

    from vllm_worker.serving import ServingState

#: Fields whose value is a set of token ids: one entry per vocabulary token at most.
TOKEN_ID_SETS = frozenset(
    {"allowed_token_ids", "logit_bias", "stop_token_ids", "logprob_token_ids"}
)
#: JSON elements per token of context, at most, outside the token-id sets.
ELEMENTS_PER_TOKEN = 4


class InputTooLarge(ValueError):
    """The input is far beyond what the model could take; `field` is where the pass stopped."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclasses.dataclass(frozen=True)
class InputBound:
    """The limits of one served model (see the module's docstring for where they come from)."""

    max_model_len: int
    vocab_size: int
    longest_token_chars: int

    @property
    def max_elements(self) -> int:
        return ELEMENTS_PER_TOKEN * self.max_model_len

    @property
    def max_chars(self) -> int:
        return self.max_model_len * self.longest_token_chars

    def container_limit(self, key: str | int | None) -> int:
        """Most elements of a list or object that is the value of `key`."""
        if key in TOKEN_ID_SETS:
            return max(self.max_model_len, self.vocab_size)
        return self.max_model_len

    def check(self, value: object) -> None:
        """Raise `InputTooLarge` naming the first field past the bound; return otherwise."""
        elements = chars = 0
        # (value, its path, whether it lies inside a token-id set)
        stack: list[tuple[object, tuple[str | int, ...], bool]] = [(value, (), False)]
        while stack:
            node, path, in_id_set = stack.pop()
            if isinstance(node, str):
                chars += 0 if in_id_set else len(node)
                if chars > self.max_chars:
                    raise InputTooLarge(_name(path), self._chars_message())
                continue
            if not isinstance(node, dict | list):
                continue
            key = path[-1] if path else None
            id_set = in_id_set or key in TOKEN_ID_SETS
            limit = self.container_limit(key)
            if len(node) > limit:
                raise InputTooLarge(
                    _name(path),
                    f"{len(node):,} elements, more than the {limit:,} this model could take "
                    f"(its context is {self.max_model_len:,} tokens)",
                )
            if not id_set:
                elements += len(node)
                if elements > self.max_elements:
                    raise InputTooLarge(
                        _name(path),
                        f"the input holds more than {self.max_elements:,} list and object "
                        f"elements in all, more than this model's context of "
                        f"{self.max_model_len:,} tokens could take",
                    )
            if isinstance(node, dict):
                for name, child in node.items():
                    chars += 0 if id_set else len(name)  # a token id's digits are not text
                    stack.append((child, (*path, name), id_set))
                if chars > self.max_chars:
                    raise InputTooLarge(_name(path), self._chars_message())
            else:
                stack.extend(
                    (child, (*path, index), id_set)
                    for index, child in enumerate(node)
                    if isinstance(child, str | dict | list)
                )

    def _chars_message(self) -> str:
        return (
            f"the input holds more than {self.max_chars:,} characters of text, more than this "
            f"model's context of {self.max_model_len:,} tokens could take (no token is longer "
            f"than {self.longest_token_chars} characters)"
        )


def _name(path: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in path) or "input"


def longest_token_chars(tokenizer: TokenizerLike) -> int:
    """Characters of the longest entry of the vocabulary (special tokens included).

    A byte-level vocabulary spells each byte as one character, and a decoded character takes
    at least one byte, so no token decodes to more characters than its entry has. vLLM's
    renderer bounds one prompt's text the same way (`max_chars_per_token`, in
    `vllm/renderers/params.py`); this bound applies it to all of an input's text at once.
    """
    return max((len(token) for token in tokenizer.get_vocab()), default=1)


_bounds: dict[int, InputBound] = {}


def of(state: ServingState) -> InputBound:
    """The bound of the model `state` serves, computed once (reading the vocabulary)."""
    bound = _bounds.get(id(state))
    if bound is None:
        config = state.engine.model_config
        bound = InputBound(
            max_model_len=config.max_model_len,
            vocab_size=config.get_vocab_size(),
            longest_token_chars=longest_token_chars(state.tokenizer),
        )
        _bounds[id(state)] = bound
    return bound


def check_job(job_input: object, state: ServingState) -> None:
    """Check a job's input against the bound of the model `state` serves; an excess raises
    `JobInputError` naming the field and the limit."""
    try:
        of(state).check(job_input)
    except InputTooLarge as error:
        raise JobInputError(str(error)) from None
