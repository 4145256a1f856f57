"""Server-sent events, the wire format of vLLM's OpenAI streams: the one module that reads or
writes it.

An event is one or more `data: ...` lines ended by a blank line (the WHATWG HTML standard,
"Server-sent events"); vLLM writes one JSON chunk per event and ends a stream with
`data: [DONE]`. Events here are bytes without their terminating blank line.
"""

from __future__ import annotations

import json
from typing import Any

#: What ends an event.
EVENT_END = b"\n\n"
#: The event vLLM (and OpenAI) end a stream with.
DONE = b"data: [DONE]"


def split(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete events at the start of `buffer`, and the unterminated rest."""
    *complete, tail = buffer.split(EVENT_END)
    return complete, tail


def encode(events: list[bytes]) -> str:
    """Events as SSE text, each with its terminator ("" for no events)."""
    return (EVENT_END.join(events) + EVENT_END).decode() if events else ""


def frame(value: Any) -> bytes:
    """One JSON value as a whole event."""
    return b"data: " + json.dumps(value).encode() + EVENT_END


def data(event: bytes) -> Any | None:
    """The JSON value an event carries; None for `[DONE]` and for an event without data.

    Raises `ValueError` when the data is not JSON.
    """
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line[:5] == b"data:"]
    if not lines or lines == [b"[DONE]"]:
        return None
    return json.loads(b"\n".join(lines))


def values(events: list[bytes]) -> list[Any]:
    """The JSON values of events that carry one, in order."""
    return [value for event in events if (value := data(event)) is not None]
