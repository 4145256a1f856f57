"""The SSE wire format: events split, encoded and read back."""

import json

from hypothesis import given
from hypothesis import strategies as st

from vllm_worker import sse


def test_parsed_events_take_data_lines_and_skip_done_and_comments():
    events = [
        b'event: response.created\ndata: {"type": "response.created"}',
        b": keep-alive",
        b'data: {"a":\ndata: 1}',
        b"data: [DONE]",
    ]
    assert sse.values(events) == [{"type": "response.created"}, {"a": 1}]


def test_split_keeps_the_unterminated_tail():
    assert sse.split(b"data: 1\n\ndata: 2\n\ndata: ") == ([b"data: 1", b"data: 2"], b"data: ")
    assert sse.split(b"") == ([], b"")


def test_done_and_data_less_events_carry_no_value():
    assert sse.data(sse.DONE) is None
    assert sse.data(b": keep-alive") is None
    assert sse.encode([]) == ""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(json_values, max_size=6))
def test_framed_values_read_back_unchanged(values):
    stream = b"".join(sse.frame(value) for value in values)
    events, tail = sse.split(stream)
    assert tail == b""
    assert [sse.data(event) for event in events] == values
    assert sse.encode(events).encode() == stream
    assert json.loads(json.dumps(values)) == values
